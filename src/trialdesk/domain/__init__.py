"""Pure trial rules. Imports only the standard library; clock and RNG are passed in."""
