"""authorizer_sync's sampling SQL without a database (the real draws: tests/integration)."""

from migration_soak.sources.authorizer_sync import sample_percent, sample_queries


def test_the_sample_is_about_two_pages_per_id_and_the_whole_table_when_small():
    assert sample_percent(200_000, 50) == 0.05  # 10 M users: 100 of 200 000 pages
    assert sample_percent(80, 50) == 100.0 and sample_percent(0, 50) == 100.0
    assert sample_percent(10**12, 1) == 1e-6  # never rounded to 0 % in the query


def test_the_plans_table_and_column_are_quoted_identifiers():
    sampled, full = sample_queries('Odd "Accounts"', "external Id", 0.05)
    assert sampled == ('SELECT "external Id"::text FROM "public"."Odd ""Accounts""" TABLESAMPLE SYSTEM (0.050000) '
                       'WHERE "external Id" IS NOT NULL ORDER BY random() LIMIT %s')
    assert full == ('SELECT "external Id"::text FROM "public"."Odd ""Accounts""" WHERE "external Id" IS NOT NULL '
                    'ORDER BY random() LIMIT %s')
