"""Dataset generators, adapters for real data, and the prepared-data format."""
