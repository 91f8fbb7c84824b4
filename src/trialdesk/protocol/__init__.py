"""The protocol file: pydantic models, the loader and the flagship protocol."""
