"""Generated from proto/wallwhale/v1 by scripts/generate_protos.py; do not edit."""
