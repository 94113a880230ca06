"""The HTML report of a cutover, from the journal."""
