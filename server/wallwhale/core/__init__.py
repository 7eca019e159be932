"""The domain: rules about downloads, accounts, keys, users and audit. No gRPC here."""
