{#-
    The built-in unique / not_null / accepted_values for a staging column named by its SOURCE
    name (e.g. Employee_ID): the test applies var('column_naming') itself. dbt never renders a
    test's column_name, so `column_name: "{{ cased_column(...) }}"` cannot do this in YAML.
-#}

{% test staged_unique(model, source_column) %}
    {{ adapter.dispatch('test_unique', 'dbt')(model, cased_column(source_column)) }}
{% endtest %}


{% test staged_not_null(model, source_column) %}
    {{ adapter.dispatch('test_not_null', 'dbt')(model, cased_column(source_column)) }}
{% endtest %}


{% test staged_accepted_values(model, source_column, values) %}
    {{ adapter.dispatch('test_accepted_values', 'dbt')(model, cased_column(source_column), values, true) }}
{% endtest %}
