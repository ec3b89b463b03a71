"""Everything that talks to PostgreSQL: connecting, table facts, COPY, swap, locks."""
