{#- Column naming for staging: one rule, chosen by var('column_naming'), applied to every column. -#}

{% macro cased_name(name, naming=none) -%}
    {#- The output name for source column `name`: snake_case, then lower / UPPER / Capitalized. -#}
    {%- set naming = naming or var('column_naming', 'lower') -%}
    {%- set re = modules.re -%}
    {#- HireDate -> Hire_Date, "Hire date" -> Hire_date; a leading "_" (e.g. _loaded_at) is kept. -#}
    {%- set snake = re.sub('([a-z0-9])([A-Z])', '\\1_\\2', name) -%}
    {%- set snake = re.sub('[^0-9A-Za-z_]+', '_', snake) -%}
    {%- set snake = re.sub('_{2,}', '_', snake).rstrip('_').lower() -%}
    {%- if naming == 'lower' -%}
        {{- snake -}}
    {%- elif naming == 'upper' -%}
        {{- snake.upper() -}}
    {%- elif naming == 'capitalize' -%}
        {{- snake.capitalize() -}}
    {%- else -%}
        {{- exceptions.raise_compiler_error(
            "var('column_naming') is " ~ naming ~ "; use one of: lower, upper, capitalize"
        ) -}}
    {%- endif -%}
{%- endmacro %}


{% macro quoted(name) -%}
    {#- `name` as a quoted identifier; unlike adapter.quote, an embedded " is doubled. -#}
    {{- '"' ~ (name | replace('"', '""')) ~ '"' -}}
{%- endmacro %}


{% macro cased_column(name, naming=none) -%}
    {#- cased_name, quoted: for SQL and for tests that name a staging column. -#}
    {{- quoted(cased_name(name, naming)) -}}
{%- endmacro %}


{% macro select_renamed(relation, transforms={}, naming=none) -%}
    {#-
        The select list for `relation`: every column as `"Original" as "cased"`, in table order.
        `transforms` maps an original column name to a SQL expression in which `{col}` stands for
        the quoted original column, e.g. {'Email': 'lower(trim({col}))'}. A transform naming a
        column the relation lacks is a compile error, so a dropped raw column fails the build.
        Output names are always quoted: upper and capitalized names need it in PostgreSQL, and
        quoting lower names too keeps reserved words (order, user) safe at no cost.
    -#}
    {%- if not execute -%}
        {{- return('') -}}  {#- parse time: the relation is not resolved yet -#}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(relation) -%}
    {%- if not columns -%}
        {{- exceptions.raise_compiler_error("relation " ~ relation ~ " has no columns or does not exist") -}}
    {%- endif -%}
    {%- set present = columns | map(attribute='name') | list -%}
    {%- set missing = [] -%}
    {%- for wanted in transforms -%}
        {%- if wanted not in present -%}{%- do missing.append(wanted) -%}{%- endif -%}
    {%- endfor -%}
    {%- if missing -%}
        {{- exceptions.raise_compiler_error(
            "column(s) " ~ (missing | join(', ')) ~ " missing from " ~ relation
            ~ " (it has: " ~ (present | join(', ')) ~ "); reload the source or update the staging model"
        ) -}}
    {%- endif -%}
    {%- set seen = {} -%}
    {%- for column in columns -%}
        {%- set out = cased_name(column.name, naming) -%}
        {%- if out in seen -%}
            {{- exceptions.raise_compiler_error(
                "columns " ~ seen[out] ~ " and " ~ column.name ~ " both become " ~ out
                ~ " under column_naming; rename one in the source"
            ) -}}
        {%- endif -%}
        {%- do seen.update({out: column.name}) -%}
        {%- set expression = transforms.get(column.name, '{col}') | replace('{col}', quoted(column.name)) %}
        {{ expression }} as {{ quoted(out) }}{{ "," if not loop.last }}
    {%- endfor -%}
{%- endmacro %}
