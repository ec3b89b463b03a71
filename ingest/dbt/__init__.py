"""dbt: running it, the generated sources and models, querying the marts."""
