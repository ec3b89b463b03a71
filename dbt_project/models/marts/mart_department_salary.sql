-- Salary statistics per department and hire year.
with

employees as (
    select * from {{ source('pg_staging', 'stg_employees__employees') }}
),

grouped as (
    select
        department,
        cast(extract(year from hire_date) as integer) as hire_year,
        count(*) as headcount,
        count(*) filter (where is_active) as active_headcount,
        round(avg(salary), 2) as avg_salary,
        min(salary) as min_salary,
        max(salary) as max_salary,
        median(salary) as median_salary
    from employees
    group by all
)

select * from grouped
order by department, hire_year
