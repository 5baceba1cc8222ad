"""pgconn's plain helpers (no database)."""

from __future__ import annotations

import pytest

from migration_soak.pgconn import qualified_table, split_table, table_identifier


def test_split_table_splits_at_the_first_dot_and_defaults_the_schema():
    assert split_table("users") == ("public", "users")  # never the search path's
    assert qualified_table("users") == "public.users" and table_identifier('a."b') == '"a"."""b"'
    assert split_table("users", "public") == ("public", "users")
    assert split_table("audit.Log") == ("audit", "Log")
    assert split_table("audit.Log", "public") == ("audit", "Log")
    assert split_table('a."b.c"') == ("a", '"b.c"')  # names are literal: only the first dot splits


@pytest.mark.parametrize("bad", ["", ".users", "public.", "."])
def test_split_table_refuses_an_empty_part(bad):
    with pytest.raises(ValueError, match="not 'table' or 'schema.table'"):
        split_table(bad, "public")
