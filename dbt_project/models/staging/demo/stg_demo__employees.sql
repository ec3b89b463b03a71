-- One row per employee: renamed per var('column_naming'), typed and cleaned. No joins, no aggregates.
with

source as (
    select * from {{ source('demo', 'employees') }}
),

renamed as (
    select
        {{ select_renamed(source('demo', 'employees'), transforms={
            'Employee_ID': 'cast({col} as bigint)',
            'First_Name': 'nullif(trim({col}), \'\')',
            'Last_Name': 'nullif(trim({col}), \'\')',
            'Email': 'nullif(lower(trim({col})), \'\')',
            'Age': 'cast({col} as integer)',
            'Salary': 'cast({col} as double precision)',
            'Department': 'nullif(trim({col}), \'\')',
            'Hire_Date': 'cast({col} as date)',
            'Last_Login': 'cast({col} as timestamp)',
            'Is_Active': 'cast({col} as boolean)',
        }) }}
    from source
)

select * from renamed
