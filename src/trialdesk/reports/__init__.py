"""Read models and exports built from the store (read only); services call them."""
