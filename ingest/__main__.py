"""`python -m ingest`: the same as the `pgloadkit` console script."""

from ingest.cli import main

raise SystemExit(main())
