"""One function per pipeline stage; each reads and writes storage only. jobs/ wraps them."""
