-- Hires per calendar month, with months without hires kept as zero, and a running total.
with

employees as (
    select * from {{ source('pg_staging', 'stg_employees__employees') }}
    where hire_date is not null
),

months as (
    select cast(month_start as date) as hire_month
    from range(
        (select date_trunc('month', min(hire_date)) from employees),
        (select date_trunc('month', max(hire_date)) from employees) + interval 1 month,
        interval 1 month
    ) as spine (month_start)
),

hires as (
    select
        cast(date_trunc('month', hire_date) as date) as hire_month,
        count(*) as hires,
        count(*) filter (where is_active) as still_active,
        count(distinct department) as departments_hiring
    from employees
    group by all
),

joined as (
    select
        months.hire_month,
        coalesce(hires.hires, 0) as hires,
        coalesce(hires.still_active, 0) as still_active,
        coalesce(hires.departments_hiring, 0) as departments_hiring,
        cast(sum(coalesce(hires.hires, 0)) over (order by months.hire_month) as bigint)
            as cumulative_hires
    from months
    left join hires using (hire_month)
)

select * from joined
order by hire_month
