"""Servicers: decode the request, call the core, encode the response. No SQL, no business rules."""
