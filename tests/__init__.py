"""The suite mirrors the packages: tests/streams/<stage>/ tests streams/<stage>/."""
