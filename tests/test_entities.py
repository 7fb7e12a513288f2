"""Entity extraction (finpulse.alerts.entities): known companies and their aliases, candidate emerging names,
Title Case headlines, the stop lists, and the real headline streams under ../shared/streams when present."""

from __future__ import annotations

import collections
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finpulse.alerts import entities
from finpulse.alerts.entities import Entities, candidate_key, canonical, extract_entities, known_companies

REPO_ROOT = Path(__file__).resolve().parent.parent
STREAMS = REPO_ROOT.parent / "shared" / "streams"
BENZINGA = STREAMS / "benzinga_analyst_ratings_2009-2020.csv"
COVID = STREAMS / "covid_2020-03_guardian_bbc.csv"
BBC = STREAMS / "bbc_business_2022-2024.csv"



def _with_package() -> None:
    pytest.importorskip("pytickersymbols.indices_data")


def _stop_words_as_written() -> set[str]:
    lists = entities.stop_words()
    out: set[str] = set()
    for key in ("function", "number", "time", "role", "junk", "place", "generic"):
        out |= {w.capitalize() for w in lists[key]}
    out |= set(lists["acronym"])
    return out


# --- aliases -----------------------------------------------------------------------------------------

def test_apple_aliases_resolve_to_one_entity():
    _with_package()
    assert canonical("Apple Inc.") == canonical("Apple Inc") == canonical("Apple") == canonical("AAPL") == "Apple"
    assert canonical("$AAPL") == "Apple"
    assert canonical("apple inc.") == "Apple"           # case-insensitive for names
    apple = known_companies()["Apple"]
    assert {"Apple", "Apple Inc", "AAPL"} <= set(apple.aliases)
    assert "AAPL" in apple.tickers


def test_suffix_stripped_and_derived_aliases():
    _with_package()
    # "Stryker Corporation" -> "Stryker"; "Lloyds Banking Group" -> "Lloyds Banking"; "Agilent Technologies" -> "Agilent"
    assert canonical("Stryker Corporation") == canonical("Stryker") == canonical("SYK") == "Stryker"
    assert canonical("Lloyds Banking") == canonical("Lloyds") == "Lloyds Banking Group"
    assert canonical("Agilent") == "Agilent Technologies"
    assert canonical("HSBC Holdings plc") == canonical("HSBC") == "HSBC"     # suffixes dropped on lookup
    assert canonical("Deutsche Borse") == canonical("Deutsche Börse")        # ASCII-folded spelling
    assert canonical("Lehman Brothers") is None                              # failed: not in a current list
    assert canonical("Next") is None            # "Next plc" stripped is an ordinary word: no alias
    assert canonical("Next plc") is not None


def test_aliases_of_a_listed_company_resolve_to_one_entity(monkeypatch):
    # as if the list still held Lehman Brothers: its legal name, short names and ticker are one entity
    real = entities._listed_records

    def with_lehman():
        yield {"name": "Lehman Brothers Holdings Inc.", "symbol": "LEH"}
        yield from real()

    monkeypatch.setattr(entities, "_listed_records", with_lehman)
    entities._table.cache_clear()
    try:
        names = ["Lehman Brothers Holdings Inc.", "Lehman Brothers Holdings", "Lehman Brothers", "Lehman", "LEH"]
        assert {canonical(n) for n in names} == {"Lehman Brothers Holdings"}
        got = extract_entities("Lehman Brothers files for bankruptcy; LEH shares collapse as Lehman staff leave")
        assert got.known == ("Lehman Brothers Holdings",)
        assert got.candidates == ()
    finally:
        monkeypatch.undo()
        entities._table.cache_clear()


def test_bundled_company_names_are_aliases():
    # models/companies.json names, with or without pytickersymbols
    assert canonical("Google") == canonical("Alphabet")
    assert canonical("Facebook") == canonical("Meta Platforms")
    assert canonical("Credit Suisse") == "Credit Suisse"        # delisted, kept by the bundled list
    bundled = json.loads((REPO_ROOT / "models" / "companies.json").read_text())
    missing = [name for name in bundled if not name.startswith("_") and canonical(name) is None]
    assert missing == []


def test_every_alias_belongs_to_exactly_one_company():
    companies = known_companies()
    owner: dict[str, str] = {}
    for name, company in companies.items():
        assert name in company.aliases or canonical(name) == name
        for alias in company.aliases:
            assert owner.setdefault(alias, name) == name, f"{alias!r} claimed by {owner[alias]!r} and {name!r}"
            assert canonical(alias) == name
    assert set(companies["Apple"].weak) == set()


def test_table_size_with_package():
    _with_package()
    companies = known_companies()
    assert len(companies) > 1500
    assert sum(len(c.aliases) for c in companies.values()) > 3000
    assert companies["Apple"].source == "companies.json+pytickersymbols"


def test_works_without_the_package(monkeypatch):
    real = entities.import_module

    def no_package(name: str):
        if name.startswith("pytickersymbols"):
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(entities, "import_module", no_package)
    entities._table.cache_clear()
    try:
        assert canonical("Apple") == canonical("AAPL") == "Apple"
        assert canonical("Stryker") is None
        assert extract_entities("Apple and Microsoft rally").known == ("Apple", "Microsoft")
    finally:
        monkeypatch.undo()
        entities._table.cache_clear()


# --- known companies in headlines ------------------------------------------------------------------------

def test_known_companies_in_headlines():
    got = extract_entities("Goldman Sachs, JPMorgan and Morgan Stanley lead gains as Apple Inc. slips")
    assert got.known == (canonical("Goldman Sachs"), canonical("JPMorgan"), canonical("Morgan Stanley"), "Apple")
    assert got.candidates == ()
    assert extract_entities("Deutsche Bank AG shares hit record low").known == (canonical("Deutsche Bank"),)


def test_ticker_aliases_need_to_be_used_as_symbols():
    _with_package()
    assert extract_entities("$AAPL and (MSFT) rise").known == ("Apple", "Microsoft")
    assert extract_entities("Why AAPL could double").known == ("Apple",)              # 4+ letters
    # a 3-letter symbol needs a company word nearby: "CRC" may be a community rehabilitation company
    assert extract_entities("XOM shares rise after refinery deal").known == (canonical("Exxon"),)
    assert extract_entities("Traders discuss XOM and oil today") == Entities()    # neither known nor emerging
    assert extract_entities("The MPC votes to cut the rate").known == ()          # an acronym, not MPC (Marathon)
    # two-letter symbols are too ambiguous: GM yeast, the GE (general election)
    assert extract_entities("Brewers use GM yeast").known == ()


def test_weak_aliases_need_company_context():
    _with_package()
    assert "Target Corporation" in extract_entities("Shares of Target fall after weak holiday sales").known
    assert extract_entities("Target practice: the Fed and inflation").known == ()
    assert extract_entities("Bill Gates warns on pandemics").known == ()
    assert extract_entities("Climbers return to Everest as Nepal reopens").known == ()
    assert extract_entities("Serena Williams wins again").known == ()


def test_all_caps_headline_gives_only_multiword_known_names():
    got = extract_entities("BANK OF AMERICA AND SILICON VALLEY BANK")
    assert got.known == (canonical("Bank of America"),)
    assert got.candidates == ()


# --- candidates ------------------------------------------------------------------------------------------

def test_acronym_only_bank_failure_headline():
    got = extract_entities("SVB shares halted as regulators step in")
    assert got == Entities(known=(), candidates=("SVB",), expansions=())


@pytest.mark.parametrize("title", [
    "Silicon Valley Bank (SVB) collapses",
    "SVB (Silicon Valley Bank) collapses",
    "Regulators seize Silicon Valley Bank; SVB depositors wait",
])
def test_acronym_and_expansion_give_one_key(title):
    got = extract_entities(title)
    assert got.candidates == ("Silicon Valley Bank",)
    assert got.expansions == (("SVB", "Silicon Valley Bank"),)


def test_expansion_in_the_summary():
    got = extract_entities("SVB collapse rattles markets",
                           "<p>Silicon Valley Bank (SVB) was closed on Friday by the <b>FDIC</b>.</p>")
    assert got.candidates == ("Silicon Valley Bank",)


@pytest.mark.parametrize("title, expected", [
    ("First Republic Bank shares tumble after SVB Financial Group collapse", ("First Republic Bank", "SVB")),
    ("Apple Inc. and Microsoft rally as Evergrande defaults", ("Evergrande",)),
    ("China Evergrande Group misses bond payment", ("China Evergrande",)),
    ("Three Arrows Capital files for bankruptcy in New York", ("Three Arrows Capital",)),
    ("FTX founder Sam Bankman-Fried arrested", ("FTX", "Sam Bankman-Fried")),
    ("Regulators probe Greensill Capital and Wirecard", ("Greensill Capital", "Wirecard")),
    ("Evergrande's debts mount", ()),                       # a sentence-initial single word is no candidate
    ("The Papers: chaos at Home Office", ()),
    ("UK Government announces support for banks in New York", ()),
    ("The Federal Reserve and the Bank of England raise rates", ()),
])
def test_candidates_in_sentence_case(title, expected):
    assert extract_entities(title).candidates == expected


@pytest.mark.parametrize("title, expected", [
    ("Stocks That Hit 52-Week Highs On Friday", ()),
    ("71 Biggest Movers From Friday", ()),
    ("Stocks Moving In Friday's Mid-Day Session", ()),
    ("Benzinga's Top Upgrades, Downgrades For September 13, 2019", ()),
    ("10 Biggest Price Target Changes For Friday", ()),
    ("Earnings Scheduled For November 14, 2013", ()),
    ("Why Sony Sold Streaming Rights For Tom Hanks Movie To Apple Instead Of Waiting Out The Pandemic", ()),
    ("Silicon Valley Bank Shares Plunge", ("Silicon Valley Bank",)),
    ("Silicon Valley Bank Collapse Deepens As Regulators Step In", ("Silicon Valley Bank",)),
    ("Evergrande Group Defaults On Debt", ("Evergrande",)),
    ("Lehman Brothers Files For Bankruptcy", ("Lehman Brothers",)),
    ("SVB Shares Halted", ("SVB",)),
    ("Evergrande Defaults On Debt", ()),                    # a lone word in Title Case says nothing
])
def test_title_case_is_conservative(title, expected):
    assert extract_entities(title).candidates == expected


def test_common_words_never_become_candidates():
    words = sorted(_stop_words_as_written())
    templates = ["Investors said {w} was the reason", "Shares fell on {w} as investors fled",
                 "{w} Stocks To Watch", "Analysts see {w} and {w} Bank"]
    for w in words:
        for template in templates:
            got = extract_entities(template.format(w=w))
            assert w not in got.candidates, (template, w, got)
            assert all(c.lower() not in {"stocks", "shares", "bank", "the", "new", "government"} for c in got.candidates)


def test_days_months_places_and_generic_words():
    for title in ["Markets slump on Monday in March as Government and Bank of Japan act",
                  "New York and London stocks fall; Shares in Europe slide on Friday",
                  "The Government says the Bank will cut rates in January"]:
        assert extract_entities(title).candidates == (), title


def test_candidate_key_normalisation():
    assert candidate_key("China  Evergrande Group's") == "China Evergrande"
    assert candidate_key("SVB Financial Group") == "SVB"
    assert candidate_key("U.S.") == "US"
    assert candidate_key("The Silicon   Valley Bank") == "Silicon Valley Bank"
    assert candidate_key("Lehman Brothers Holdings Inc.") == "Lehman Brothers"
    assert candidate_key("  ") is None


def test_deterministic_and_deduplicated():
    title = "Evergrande and SVB: why Evergrande matters more than SVB, says Evergrande bondholder"
    first = extract_entities(title)
    assert first.candidates == ("SVB", "Evergrande")
    assert all(extract_entities(title) == first for _ in range(3))
    assert extract_entities("Apple, Apple and AAPL").known == ("Apple",)


def test_bad_inputs():
    assert extract_entities("") == Entities()
    assert extract_entities("   ", None) == Entities()
    assert extract_entities("...", "<p></p>") == Entities()
    assert canonical("") is None


def test_nothing_is_built_at_import():
    code = ("import finpulse.alerts.entities as e, sys; "
            "sys.stdout.write(str((e._table.cache_info().currsize, e._lists.cache_info().currsize)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "(0, 0)"


# --- real headline streams ---------------------------------------------------------------------------------

def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _top(counter: collections.Counter[str], n: int) -> list[str]:
    return [name for name, _ in counter.most_common(n)]


@pytest.mark.skipif(not BENZINGA.is_file(), reason="../shared/streams is not there")
def test_benzinga_known_entities_match_the_ticker_column():
    _with_package()
    rows = _rows(BENZINGA)
    by_ticker: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    known: collections.Counter[str] = collections.Counter()
    cands: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    results = [extract_entities(r["title"]) for r in rows]
    took = time.perf_counter() - started
    for row, got in zip(rows, results, strict=True):
        by_ticker[row["ticker"]].update(got.known)
        known.update(got.known)
        cands.update(got.candidates)
    print(f"\nBenzinga: {len(rows)} headlines in {took:.2f} s")
    print("top known:", known.most_common(15))
    print("top candidates:", cands.most_common(25))
    # the file's ticker column says which company a headline is about
    assert by_ticker["AAPL"].most_common(1)[0][0] == "Apple"
    assert by_ticker["ABBV"].most_common(1)[0][0] == "AbbVie"
    assert by_ticker["A"].most_common(1)[0][0] == "Agilent Technologies"
    assert by_ticker["AAP"].most_common(1)[0][0] == "Advance Auto Parts"
    # Title Case market-wide headlines that name no company give nothing
    market_wide = re.compile(r"^(Stocks That Hit|Stocks Moving In|\d+ Biggest Movers|Benzinga's Top Upgrades[^(]*$"
                             r"|Earnings Scheduled For [^(]*$|\d+ Stocks To Watch)")
    generic = [got for row, got in zip(rows, results, strict=True) if market_wide.match(row["title"])]
    assert len(generic) > 300
    assert sum(len(g.candidates) for g in generic) == 0
    stop = {w.lower() for w in _stop_words_as_written()}
    for name in _top(cands, 50):
        assert name.lower() not in stop and not name[0].isdigit(), name
    assert "Atlas Air" in _top(cands, 10)       # Atlas Air Worldwide (AAWW), taken private in 2023


@pytest.mark.skipif(not COVID.is_file(), reason="../shared/streams is not there")
def test_covid_stream_entities_look_like_names():
    rows = _rows(COVID)
    known: collections.Counter[str] = collections.Counter()
    cands: collections.Counter[str] = collections.Counter()
    for row in rows:
        got = extract_entities(row["title"], row.get("description"))
        known.update(got.known)
        cands.update(got.candidates)
    print("\nCOVID March 2020, top known:", known.most_common(15))
    print("top candidates:", cands.most_common(30))
    assert {"Amazon", "Netflix"} <= set(_top(known, 10))
    assert {"Boris Johnson", "Donald Trump"} <= set(_top(cands, 10))
    stop = {w.lower() for w in _stop_words_as_written()} | {"covid", "coronavirus", "covid-19", "guardian"}
    for name in _top(cands, 100):
        assert name.lower() not in stop, name
        assert name[0].isupper(), name


@pytest.mark.skipif(not BBC.is_file(), reason="../shared/streams is not there")
def test_bbc_business_stream_finds_failed_and_private_companies():
    rows = _rows(BBC)
    cands: collections.Counter[str] = collections.Counter()
    known: collections.Counter[str] = collections.Counter()
    for row in rows:
        got = extract_entities(row["title"], row.get("description"))
        cands.update(got.candidates)
        known.update(got.known)
    print("\nBBC business, top known:", known.most_common(15))
    print("top candidates:", cands.most_common(30))
    # not listed, so candidates: the Post Office, Royal Mail, Wilko (failed 2023), FTX (failed 2022)
    assert {"Post Office", "Royal Mail", "Wilko", "FTX"} <= set(_top(cands, 30))
    assert {"Twitter", "Tesco", "Boeing"} <= set(_top(known, 5))


@pytest.mark.skipif(not BENZINGA.is_file(), reason="../shared/streams is not there")
def test_speed_of_ten_thousand_headlines():
    titles = [r["title"] for r in _rows(BENZINGA)]
    titles = (titles * 2)[:10_000]
    extract_entities("warm up")
    started = time.perf_counter()
    for title in titles:
        extract_entities(title)
    took = time.perf_counter() - started
    print(f"\n10,000 headlines in {took:.2f} s ({took / len(titles) * 1e6:.0f} us each)")
    assert took < 5.0       # about 0.5-0.8 s on a 2-core dev machine; generous for a busy CI
