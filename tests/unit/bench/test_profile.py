"""The bench's profile summary: which functions cost most, loop waits left out."""

from __future__ import annotations

from bench.profile import short, top


def test_uvloop_and_selector_waits_count_as_idle_in_profiles():
    collapsed = "\n".join(
        [
            "main (app.py:1);Runner.run (asyncio/runners.py:118) 50",
            "main (app.py:1);EpollSelector.select (selectors.py:468) 30",
            "main (app.py:1);work (services/consent/handlers.py:10) 15",
            "main (app.py:1);work (services/consent/handlers.py:12);dumps (json.py:3) 5",
        ]
    )
    entries = top(collapsed, by="own")
    assert [(e.frame, round(e.own, 2)) for e in entries] == [
        ("work (consent/handlers.py)", 0.75),
        ("dumps (json.py)", 0.25),
    ]
    assert entries[0].inclusive == 1.0


def test_project_view_ranks_the_projects_functions_by_inclusive_share():
    collapsed = "\n".join(
        [
            "consume (/w/shared/plumbing/service.py:70);apply (/w/services/consent/handlers.py:9);"
            "encode (/w/lib/orjson.py:1) 6",
            "consume (/w/shared/plumbing/service.py:70);recv (/w/lib/asyncpg.py:3) 4",
        ]
    )
    ranked = [(e.frame, e.inclusive) for e in top(collapsed, by="project")]
    assert ranked == [("consume (plumbing/service.py)", 1.0), ("apply (consent/handlers.py)", 0.6)]


def test_short_frame_names_keep_the_package_and_drop_the_line():
    assert short("flush (/work/main/services/consent/handlers.py:154)") == (
        "flush (consent/handlers.py)"
    )
    assert short("<module>") == "<module>"
