"""Pure entity extraction for headlines: known companies (with aliases) and candidate emerging names.

A headline's scopes name a topic and tickers; a crisis about a company that no list holds (Silicon
Valley Bank in March 2023: "SVB", "Silicon Valley Bank", "SVB Financial", spread over many topics)
needs a scope named after the company. This module finds the names; wiring them into scopes
(``entity:<name>``), Redis and detection is done elsewhere.

**Known companies** come from the offline constituent lists shipped in the PyPI package
``pytickersymbols`` (MIT licence; about 1,800 companies of 20 indices: S&P 500/600/100, NASDAQ 100,
Dow Jones, FTSE 100, DAX, MDAX, SDAX, TecDAX, CAC 40, CAC Mid 60, EURO STOXX 50, IBEX 35, AEX,
BEL 20, SMI 20, OMX Stockholm 30, OMX Helsinki 25, Nikkei 225; names and ticker symbols, read from
the Python module ``pytickersymbols.indices_data``, never from the network) and from
``models/companies.json`` (the small bundled list of :mod:`finpulse.models.tickers`). Each company
gets one canonical name (the listed name without its legal-form suffix: ``"Apple"`` for
``"Apple Inc."``) and aliases that all resolve to it:

* the listed name (``"Apple Inc."``), the name without legal or holding suffixes (``Inc``, ``Corp``,
  ``Corporation``, ``plc``, ``Ltd``, ``AG``, ``SE``, ``SA``, ``N.V.``, ``Group``, ``Holdings``, ...),
  an ASCII-folded spelling (``"Deutsche Borse"``) and the names ``companies.json`` gives it;
* its US ticker symbols (``"AAPL"``), matched only as upper-case tokens, when the symbol has 3+
  letters (2-letter symbols only from a short allow list: ``GE``, ``GM``, ``GS``, ``BP``, ``DB``) and
  is not an English word or a common acronym (``ALL``, ``NOW``, ``CEO``, ``AI``, ``US``, ...).

An alias that two companies share at the same strength is dropped (ambiguous). A one-word alias that
is an ordinary word (``"Target"``, ``"Next"``, ``"Visa"``; :data:`WEAK_NAMES` and the stop lists) is
*weak*: it is matched only mid-sentence in a sentence-case headline, never in a Title Case headline
nor as a headline's first word. A delisted or failed company (Lehman Brothers, SVB, Credit Suisse
once it is gone from the list) is not known: that is what candidates are for.

**Candidates** for emerging entities are the other names in a headline:

* capitalised multi-word names (``"Silicon Valley Bank"``, ``"First Republic Bank"``; ``of`` and
  ``&`` may join words: ``"Bank of Hope"``), single capitalised words that are not the first word of a
  sentence (``"... as Evergrande defaults"``; a first word counts only when possessive,
  ``"Evergrande's debts"``) and acronyms (``"SVB"``, ``"FTX"``, anywhere);
* never the words of the stop lists (:func:`stop_words`): function words, days, months and other
  time words, titles and roles (``"Chief Executive"``, ``"President"``), headline vocabulary
  (``"Stocks"``, ``"Shares"``, ``"Highs"``, ``"Plunge"``, ...), countries, nationalities, large cities,
  US states and regions, generic institution words (``"Government"``, ``"Bank"`` alone) and common
  acronyms (``"CEO"``, ``"IPO"``, ``"NHS"``); a name made only of such words (``"UK Government"``,
  ``"New York"``, ``"Bank of England"``) is no candidate either;
* in a **Title Case** headline (every word capitalised, as some sources write them: "Stocks That Hit
  52-Week Highs On Friday") capitals say nothing, so only acronyms and runs of 2+ words, broken at
  every stop word, count, and a run needs a word outside the generic and place lists
  (``"Silicon Valley Bank Shares Plunge"`` gives ``"Silicon Valley Bank"``; a lone word gives
  nothing). An ALL-CAPS headline gives nothing but known multi-case names.

A candidate's key (:func:`candidate_key`) has its whitespace collapsed, possessive ``'s`` and
punctuation stripped, legal and holding suffixes dropped (``"Evergrande Group"`` -> ``"Evergrande"``),
and an acronym followed only by corporate words reduced to the acronym (``"SVB Financial Group"`` ->
``"SVB"``). When an acronym and its expansion appear in the same article (``"Silicon Valley Bank
(SVB)"``, or initials that match), both give one key, the expanded name, and the pair is reported in
:attr:`Entities.expansions` so a caller can keep a mapping over a stream. Names of people come
through as candidates too (the module has no person list); so do other proper names the stop lists
do not know.

Everything is pure: nothing is read at import; the company table is built on first use (about 0.1 s)
and cached. Matching is a dictionary of alias token sequences (longest match first) over the tokens of
the headline, so extraction costs tens of microseconds per headline.
"""

from __future__ import annotations

import html
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "Entities",
    "KnownCompany",
    "SUMMARY_CHARS",
    "WEAK_NAMES",
    "candidate_key",
    "canonical",
    "extract_entities",
    "known_companies",
    "stop_words",
]

#: Characters of a summary that are searched (after HTML tags are removed): the lede names the
#: entities; long bodies add noise and cost.
SUMMARY_CHARS = 600

# --- stop lists (lower case; see the module docstring) ----------------------------------------------

_FUNCTION_WORDS = """
a an the and or but nor of in on at to for by with from as into onto over under up down out off about above
below after before since until till amid amidst among against between through throughout during without within
via per vs versus than then so if when while where which who whom whose what why how is are was were be been
being am do does did done doing has have had having will would shall should can could may might must not no
yes all any some each every both either neither more most less least many much few several such this that
these those it its i me my mine we our ours us you your yours he him his she her hers they them their theirs
here there now just only also even still yet again too very really ever never always often already soon
one two three four five six seven eight nine ten eleven twelve hundred thousand million millions billion
billions trillion dozen half second third fourth fifth last next new old own other others another same
get gets got getting go goes going gone went make makes made making take takes took taken give gives gave
given say says said see sees saw seen let lets put puts keep keeps come comes came back like unlike
whether because although though however despite toward towards around across along behind beyond near
inside outside upon onto amongst whilst thus hence why's what's who's it's here's there's that's
don't doesn't didn't won't can't isn't aren't wasn't weren't hasn't haven't i'm i've i'd i'll we're we've
we'll you're you've they're they've he's she's let's mr mrs ms dr st oh hey ok okay yeah
"""

_TIME_WORDS = """
monday tuesday wednesday thursday friday saturday sunday mondays fridays weekend weekends weekday
january february march april may june july august september october november december
jan feb mar apr jun jul aug sep sept oct nov dec
today tonight tomorrow yesterday morning afternoon evening night midnight noon midday day days week weeks
weekly month months monthly year years yearly annual annually quarter quarters quarterly decade decades
century season seasonal spring summer autumn fall winter christmas easter halloween thanksgiving ramadan
diwali hanukkah xmas eve holiday holidays time times date dates hour hours minute minutes moment era
early late earlier later latest past future recent recently ago daily ytd yoy qoq fy qtr mid
"""

_ROLE_WORDS = """
mr mrs ms miss dr sir dame lord lady prof professor president presidents vice minister ministers prime
chancellor secretary governor governors mayor senator senators sen rep congressman congresswoman king queen
prince princess duke duchess pope saint chairman chairwoman chair chairs chief chiefs executive executives
ceo ceos cfo coo cto founder founders co-founder boss bosses head heads director directors manager managers
analyst analysts economist economists spokesman spokeswoman spokesperson official officials leader leaders
commissioner ambassador judge judges justice lawmaker lawmakers regulator regulators investor investors
trader traders banker bankers billionaire billionaires tycoon mogul chairperson deputy acting former ex
general admiral captain colonel sergeant officer officers inspector detective coach manager's
"""

_JUNK_WORDS = """
stock stocks share shares shareholder shareholders market markets marketplace price prices pricing trading
trade trades traded earnings revenue revenues sale sales profit profits loss losses result results report
reports reported reporting guidance outlook forecast forecasts estimate estimates est eps adj rev dividend
dividends buyback buybacks rating ratings rated upgrade upgrades upgraded downgrade downgrades downgraded
maintain maintains maintained initiate initiates initiated initiation initiations reiterate reiterates
reiterated raise raises raised lower lowers lowered cut cuts boost boosts boosted see sees expect expects
expected target targets pt buy buys buying sell sells selling sold hold holds neutral overweight underweight
outperform outperforms underperform underperforms perform performs performing performance equal-weight
sector sectors industry industries company companies firm firms business businesses deal deals merger
mergers acquisition acquisitions acquire acquires acquired offer offers offering ipo ipos moving mover
movers biggest big bigger top highs high higher highest low lows lower lowest gainer gainers loser losers
decliner decliners session sessions mid-day pre-market premarket after-hours mid-morning mid-afternoon
update updates updated news alert alerts watch watching hit hits hitting plunge plunges plunged soar soars
soared surge surges surged jump jumps jumped fall falls fell falling rise rises rose rising drop drops
dropped slump slumps slumped tumble tumbles tumbled crash crashes crashed rally rallies rallied climb
climbs climbed gain gains gained slide slides slid sink sinks sank spike spikes spiked slip slips slipped
rebound rebounds recover recovers recovery announce announces announced announcement launch launches
launched says said reports filing files filed sign signs signed agree agrees agreed agreement agreements
approve approves approved approval warn warns warned warning warnings plan plans planned call calls called
set sets hits beat beats miss misses missed top tops tops fails fail failed failure collapse collapses
collapsed halt halts halted suspend suspends suspended close closes closed closing open opens opened
opening live latest breaking exclusive analysis opinion editorial comment review reviews letters letter
podcast video videos picture pictures photo photos watch explainer explained guide quiz recap preview
summary wrap briefing newsletter blog chatter tweets tweet interview data study survey poll polls index
indices volume volumes futures future options option calls puts bonds bond yields yield debt debts credit
cash money fund funds funding capital assets asset value values valuation growth economy economic economics
crisis crises inflation recession rates rate interest tax taxes budget spending cost costs bill bills jobs
job workers worker staff employees people public government governments state states federal national
policy policies law laws rules rule court courts police health care care war wars deal talks talk vote
votes election elections campaign report's covid covid-19 coronavirus virus pandemic epidemic outbreak
lockdown lockdowns quarantine vaccine vaccines brexit climate energy oil gas petrol fuel gold silver
commodities commodity crypto bitcoin cryptocurrency blockchain tech technology technologies ai internet
online digital social media video world global international worldwide overall total record records
million billion percent pct per cent half full part much more most least best worst better worse good
bad great strong weak huge major minor key main small large mid small-cap large-cap mid-cap micro-cap
positive negative mixed upbeat bullish bearish upside downside inline strength growth hot cold fresh
stake stakes holding holdings position positions investment investments investing invest invests
portfolio portfolios return returns income net gross margin margins sale's shares' stocks' firm's
highlights notable note notes names name list lists pick picks screen screens ranking rank ranks
chart charts technical technicals level levels support resistance breakout move moves moved
meeting meetings conference conferences event events presentation presentations hearing hearings
trial trials test tests testing study studies drug drugs treatment treatments patient patients disease
product products service services customer customers consumer consumers client clients user users
region regions country countries city cities town towns area areas home homes house houses housing
property properties land school schools university universities hospital hospitals family families
child children kids man men woman women girl girls boy boys life lives death deaths dead killed
story stories question questions answer answers reason reasons way ways thing things lot lots kind
everything something nothing anything everyone someone nobody anyone why how what when
mining miners oilfield retail retailer retailers retailers' bank's biotech pharma healthcare
brief briefs daily weekly monthly morning evening edition special dear meet
sweep tape pulse peek ask asks answer view views vs versus terms disclosed reportedly
expected unexpected surprise surprises surprising change changes changed changing continue continues
continued remain remains remained begin begins began start starts started end ends ended
help helps helped need needs needed want wants wanted try tries tried use uses used using
include includes included including add adds added show shows showed shown find finds found
lead leads leading led follow follows following win wins won lose loses lost pay pays paid
receive receives received provide provides provided complete completes completed release releases released
higher-than-expected lower-than-expected better-than-expected worse-than-expected
inc corp ltd plc llc co l.p lp
"""

_PLACE_WORDS = """
world europe european europeans asia asian asia-pacific africa african america american americans americas
latin north south east west northern southern eastern western central middle arctic antarctic atlantic
pacific mediterranean gulf caribbean scandinavia scandinavian nordic baltic balkans
uk u.k britain british briton britons brits england english scotland scottish scots wales welsh ireland
irish ulster london manchester birmingham liverpool leeds glasgow edinburgh cardiff belfast bristol
oxford cambridge westminster whitehall downing
us u.s usa america united states washington new york california texas florida illinois ohio michigan
georgia virginia carolina pennsylvania massachusetts jersey arizona nevada colorado oregon minnesota
wisconsin missouri tennessee kentucky alabama louisiana maryland indiana iowa kansas utah oklahoma
arkansas mississippi nebraska idaho hawaii alaska maine vermont connecticut delaware montana wyoming dakota
hampshire rhode island chicago boston seattle miami houston dallas atlanta detroit denver phoenix
philadelphia angeles los san francisco diego jose las vegas brooklyn manhattan hollywood
canada canadian toronto montreal vancouver ottawa mexico mexican brazil brazilian argentina argentinian
chile chilean colombia colombian peru peruvian venezuela venezuelan cuba cuban
germany german germans berlin frankfurt munich hamburg france french paris italy italian italians rome
milan spain spanish madrid barcelona portugal portuguese lisbon netherlands dutch holland amsterdam
belgium belgian brussels switzerland swiss zurich geneva austria austrian vienna sweden swedish stockholm
norway norwegian oslo denmark danish copenhagen finland finnish helsinki iceland icelandic poland polish
warsaw czech hungary hungarian budapest greece greek athens turkey turkish istanbul ankara cyprus malta
luxembourg romania romanian bulgaria serbia croatia slovakia slovenia ukraine ukrainian ukrainians kyiv
kiev russia russian russians moscow belarus estonia latvia lithuania georgia
china chinese beijing shanghai shenzhen guangzhou wuhan hong kong macau taiwan taiwanese taipei japan
japanese tokyo osaka korea korean koreans seoul pyongyang india indian indians delhi mumbai bangalore
pakistan pakistani bangladesh sri lanka nepal singapore singaporean malaysia malaysian indonesia indonesian
jakarta thailand thai bangkok vietnam vietnamese philippines filipino manila australia australian
australians sydney melbourne zealand auckland fiji
iran iranian iraq iraqi syria syrian israel israeli israelis gaza palestinian palestine lebanon jordan
egypt egyptian saudi saudis arabia arabian emirates uae dubai abu dhabi qatar qatari kuwait yemen oman
bahrain afghanistan afghan nigeria nigerian kenya kenyan ethiopia ghana uganda zimbabwe zambia morocco
algeria tunisia libya sudan somalia congo angola mozambique senegal
county province
"""

_GENERIC_WORDS = """
bank banks banking group holdings holding capital financial finance first national international global
general united trust partners energy power resources industries industrial technologies technology
systems solutions services brands properties realty health healthcare pharmaceuticals pharmaceutical pharma
therapeutics biosciences airlines airline airways motors motor foods insurance securities investments
fund asset management advisors ventures exchange savings federal central reserve royal standard
association authority agency department ministry office council commission committee board institute
institution foundation society organisation organization union party parliament congress senate house
court supreme army navy force forces service team club league cup championship
government administration treasury fed eurozone eu
labour labor tory tories conservative conservatives democrat democrats democratic republican republicans
liberal liberals green greens
"""

_CONNECTORS = "of & de du des la le van von der den del di da y"

_CORPORATE_SUFFIXES = """
inc incorporated corp corporation co company companies cos ltd limited plc llc lp l.p llp ag se sa s.a
nv n.v bv b.v ab asa oyj oy a/s as spa s.p.a kgaa gmbh sarl pte bhd tbk group holdings holding
"""

# Words after an acronym that still mean "the acronym's company" ("SVB Financial Group" -> "SVB").
_ACRONYM_TAIL_WORDS = """
financial bank bancorp bancshares capital group holdings holding trading securities partners inc corp co
ltd plc llc sa ag se nv
"""

_COMMON_ACRONYMS = """
UK US USA UAE EU UN UNESCO UNICEF AI IT TV PC PM AM MP MPS MEP MEPS CEO CFO COO CTO CIO CEOS GDP CPI PPI PMI
IPO IPOS ETF ETFS ETN SEC FED FOMC FDA FBI CIA NSA NASA NATO OPEC OECD IMF WHO WTO ECB BOE BOJ PBOC RBA RBI
SNB ESG EV EVS NHS BBC ITV CNN CNBC NBC ABC CBS NPR PBS HBO NFL NBA MLB NHL NCAA FIFA UEFA FA EFL RFU WTA
ATP ICC IOC F1 GP COVID SARS MERS HIV AIDS LGBT LGBTQ DIY HQ PR HR VAT ISA HMRC DWP ONS OBR IFS CBI BRC FCA
PRA CMA FTC DOJ DOE DOD EPA FAA NTSB FDIC OCC CFTC FINRA IRS NY NYC LA DC SF USD GBP EUR JPY CNY CHF
GMT BST EST PST EDT ET UPDATE UPDATES NOTE ALERT BREAKING EXCLUSIVE LIVE NEW WATCH FAQ OK TBA TBD YOY QOQ
YTD EPS PT PE ROE ROI EBIT EBITDA AUM NAV SPAC SPACS NFT NFTS DAO CBD THC API APIS APP SAAS IOT AR VR XR
ICU PPE GP SNP ANC ISIS IS IRA GOP DNC RNC MAGA POTUS SCOTUS TUC S&P DAX FTSE CAC DJIA NASDAQ NYSE LSE
VIX WTI LNG NGO NGOS BLM UFC WWE MMA RAF MOD NSW ACT QLD IPA USPS DHS ICE CDC NIH NIST DVLA DVD CD USB
PDF PIN ID IDS ATM ATMS SUV SUVS EVS CO2 UNHCR WFP AFP AP PA DPA REIT REITS BDC LP GP II III IV VI
CEO'S UK'S US'S EU'S Q1 Q2 Q3 Q4 H1 H2 FY M&A IP IPR RSS URL AGM EGM CGT NI NIC PAYE SME SMES BNPL
ESA JAXA SPX NDX RUT NSE BSE TSX ASX HKEX SSE SZSE OTC ADR ADRS GDR ECN LIBOR SOFR SONIA QE QT ZIRP
WHO'S OPEC+ AGI GPU GPUS CPU CPUS AMA DR MR MRS MS ST JR SR PLC INC LTD CORP LLC AG SE SA NV AB
"""

# Ordinary words that are also the names of listed companies (``Target``, ``Next``, ``Visa``): matched
# only mid-sentence in sentence case. Found by checking every one-word alias against a frequency-ordered
# English vocabulary and the streams under shared/streams (see tests/test_entities.py).
WEAK_NAMES: frozenset[str] = frozenset("""
next southern match news arm box ball block screen fox target orange sharp pool douglas waters universal
shift partners admiral progressive evolution phoenix gates continental noble rogers berkeley interface
hub diploma brady sage dana rational visa snap zoom carnival square compass apollo genesis mercury
vista ameren avista deluxe cactus stride harmonic recruit unite now public camden trinity liberty
patriot pioneer summit sterling heritage frontier horizon premier prime pinnacle legacy
""".split())

# Two-letter US ticker symbols that are matched (all others are too often other acronyms: MS, PM, IT).
_TWO_LETTER_TICKERS = frozenset({"GE", "GM", "GS", "BP", "DB"})

# English words that are also US ticker symbols of 3+ letters, beyond the stop lists.
_TICKER_WORDS = frozenset("""
air act adam ale ana are art ball ben big box cake calm can car cars cash chef con coo cool cost crow cub
doc dog eat eye fast fix fly fun gen go golf good hope ice icon joe key kid land life love low mac main
man mind nice now out pat peak peg pet play plus pool rare rex rock room run safe see sky step sun
tech ten tree two unit way well win wing wire wood work yes you zip ago arch bark bid bold bolt boom boot
dash deal dine earn echo ever fate fizz flex fold font fuel fund gold grow hair hear herd hire home hood
jack jump kind life lift link live loan lock love mark mind moon move nail nest nice note path pick
pine plan post race rain rank real ride ring road roll root rush safe salt sand save seat seed ship shop
sign site slow snow soar song spot star stay stop sure task team tell text tide time tour town toys
trip true turn vine wave wear west wind wolf yelp
""".split())

# Names whose listed spelling is not how the news writes them.
_DISPLAY_FIXES = {
    "EBay": "eBay", "EPlus": "ePlus", "EasyJet": "easyJet", "IndustrivärdenC": "Industrivärden",
    "KalmarB": "Kalmar", "LifcoB": "Lifco", "arGEN-X": "argenx", "Orpea-Gruppe": "Orpea",
}

# Short names the news uses for listed companies that no listed name yields.
_EXTRA_ALIASES = {
    "Lloyds": "Lloyds Banking Group", "Lloyds Bank": "Lloyds Banking Group", "Goldman": "Goldman Sachs",
    "JPMorgan Chase & Co": "JPMorgan Chase", "Berkshire": "Berkshire Hathaway", "Exxon": "ExxonMobil",
    "Volkswagen": "Volkswagen Group", "VW": "Volkswagen Group", "Mercedes": "Mercedes-Benz Group",
    "Rolls-Royce": "Rolls-Royce Holdings", "Marks & Spencer": "Marks and Spencer",
    "M&S": "Marks and Spencer", "Sainsbury": "Sainsbury's", "Tesla Motors": "Tesla",
}

# Multi-word names that are places or institutions, not companies.
_STOP_PHRASES = """
new york|new jersey|new zealand|new delhi|hong kong|south korea|north korea|south africa|saudi arabia|
united states|united kingdom|united nations|european union|european commission|european parliament|
european central bank|bank of england|bank of japan|bank of canada|reserve bank|federal reserve|
people's bank of china|white house|downing street|wall street|silicon valley|middle east|
los angeles|san francisco|las vegas|sri lanka|el salvador|costa rica|puerto rico|
world health organization|world bank|supreme court|high court|prime minister|home office|
foreign office|house of commons|house of lords|treasury department|justice department|
department of justice|state department|premier league|champions league|world cup|
black friday|cyber monday|new year|good friday|boxing day|earth day|
covid-19|the guardian|the observer|associated press|the times
"""


@lru_cache(maxsize=1)
def _lists() -> dict[str, frozenset[str]]:
    def words(text: str) -> frozenset[str]:
        return frozenset(text.split())

    return {
        "function": words(_FUNCTION_WORDS), "time": words(_TIME_WORDS), "role": words(_ROLE_WORDS),
        "junk": words(_JUNK_WORDS), "place": words(_PLACE_WORDS), "generic": words(_GENERIC_WORDS),
        "connector": words(_CONNECTORS), "corporate": words(_CORPORATE_SUFFIXES),
        "acronym_tail": words(_ACRONYM_TAIL_WORDS), "acronym": words(_COMMON_ACRONYMS),
        "phrases": frozenset(p.strip() for p in _STOP_PHRASES.split("|") if p.strip()),
    }


def stop_words() -> dict[str, frozenset[str]]:
    """The stop lists, for inspection and tests.

    :returns: ``{"function": ..., "time": ..., "role": ..., "junk": ..., "place": ..., "generic": ...,
        "connector": ..., "corporate": ..., "acronym_tail": ..., "acronym": ..., "phrases": ...}``; words
        in lower case, except ``acronym`` (upper case) and ``phrases`` (lower-case multi-word names).
    """
    return dict(_lists())


# --- tokens ------------------------------------------------------------------------------------------

# A token: letters/digits, with inner joiners (J.P, AT&T, Rolls-Royce, McDonald's, K+S), or a lone "&".
_TOKEN_RE = re.compile(r"[^\W_](?:[\w.'&+\-]*[^\W_])?|&")
_TAG_RE = re.compile(r"<[^>]*>")
_TRANSLATE = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "–": "-", "‑": "-", "\u00a0": " "})
_ABBREVIATIONS = frozenset(
    "inc corp co ltd mr mrs ms dr st jr sr vs no prof gen gov sen rep ave bros plc".split()
)
_SENTENCE_MARKS = frozenset(".:;!?|\"“”—")
_BREAK_MARKS = frozenset(",;:()[]{}\"“”|/!?—…•·")

# token classes (bit flags)
_FUNC, _TIME, _ROLE, _JUNK, _PLACE, _GENERIC, _ACRO, _CONN, _CORP, _DIGIT = (1 << i for i in range(10))
_SPLIT_SENTENCE = _FUNC | _TIME | _ROLE | _DIGIT
_SPLIT_TITLE = _SPLIT_SENTENCE | _JUNK
_STOPPISH = _FUNC | _TIME | _ROLE | _JUNK | _PLACE | _GENERIC | _ACRO | _CORP | _DIGIT
_NOT_NAME_ALONE = _STOPPISH


def _normalize_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).translate(_TRANSLATE)


def _strip_possessive(token: str) -> str:
    if token.endswith("'s") or token.endswith("'S"):
        return token[:-2]
    return token[:-1] if token.endswith("'") else token


def _is_acronym(token: str) -> bool:
    """2-7 characters, upper-case letters (dots and & allowed inside), at least two letters."""
    if not 2 <= len(token) <= 8 or not token.isupper():
        return False
    letters = sum(ch.isalpha() for ch in token)
    return letters >= 2 and all(ch.isalpha() or ch in ".&" for ch in token)


def _undot(token: str) -> str:
    """``U.S`` -> ``US``; ``J.P`` -> ``JP``; other tokens unchanged."""
    if "." in token and all(len(part) <= 1 for part in token.split(".")):
        return token.replace(".", "")
    return token


_CLASS_CACHE: dict[str, int] = {}


def _token_class(token: str) -> int:
    """The stop-list flags of one token (possessive already stripped)."""
    cached = _CLASS_CACHE.get(token)
    if cached is not None:
        return cached
    lists = _lists()
    flags = 0
    if any(ch.isdigit() for ch in token):
        flags |= _DIGIT
    low = token.lower()
    for key, flag in (("function", _FUNC), ("time", _TIME), ("role", _ROLE), ("junk", _JUNK),
                      ("place", _PLACE), ("generic", _GENERIC), ("connector", _CONN), ("corporate", _CORP)):
        if low in lists[key]:
            flags |= flag
    if token.isupper() and (token in lists["acronym"] or _undot(token) in lists["acronym"]):
        flags |= _ACRO
    if not flags and "-" in token:   # "US-China", "Trump-era", "Flood-hit": junk if any part is listed
        for part in token.split("-"):
            if part and _token_class(part) & (_STOPPISH & ~_CORP):
                flags |= _JUNK
                break
    if len(_CLASS_CACHE) < 200_000:
        _CLASS_CACHE[token] = flags
    return flags


@dataclass(frozen=True, slots=True)
class _Tokens:
    text: tuple[str, ...]       # token as written (quotes normalised)
    base: tuple[str, ...]       # possessive stripped
    possessive: tuple[bool, ...]
    hard: tuple[bool, ...]      # a hard break (punctuation) before this token
    initial: tuple[bool, ...]   # first word of a sentence or clause
    spans: tuple[tuple[int, int], ...]
    gaps: tuple[str, ...]       # the text between the previous token and this one


def _tokenize(text: str) -> _Tokens:
    texts: list[str] = []
    bases: list[str] = []
    poss: list[bool] = []
    hard: list[bool] = []
    initial: list[bool] = []
    spans: list[tuple[int, int]] = []
    gaps: list[str] = []
    prev_end = 0
    prev_tok = ""
    for m in _TOKEN_RE.finditer(text):
        tok = m.group(0)
        gap = text[prev_end:m.start()]
        stripped = gap.strip()
        if not texts:
            is_hard, is_initial = True, True
        elif not stripped:
            is_hard, is_initial = False, False
        elif stripped == "$":
            is_hard, is_initial = False, False
        elif stripped == "." and (prev_tok.lower() in _ABBREVIATIONS or "." in prev_tok or len(prev_tok) == 1):
            is_hard, is_initial = False, False       # "J.P. Morgan", "Apple Inc. said"
        else:
            is_hard = True
            is_initial = (
                any(ch in _SENTENCE_MARKS for ch in stripped)
                or stripped in {"-", "'", "."}
                or stripped.endswith("'")
                or (stripped == ".'" or stripped.startswith("."))
            )
        base = _strip_possessive(tok)
        texts.append(tok)
        bases.append(base or tok)
        poss.append(base != tok)
        hard.append(is_hard)
        initial.append(is_initial)
        spans.append((m.start(), m.end()))
        gaps.append(gap)
        prev_end = m.end()
        prev_tok = tok
    return _Tokens(tuple(texts), tuple(bases), tuple(poss), tuple(hard), tuple(initial), tuple(spans),
                   tuple(gaps))


def _alias_tokens(name: str) -> tuple[str, ...]:
    return tuple(m.group(0) for m in _TOKEN_RE.finditer(_normalize_text(name)))


# --- the case of a headline ---------------------------------------------------------------------------

_MINOR_WORDS = frozenset("a an the and or nor but of in on at to for by with from as vs via per into onto over up off out".split())


def _mode(tokens: _Tokens) -> str:
    """``"sentence"``, ``"title"`` (Title Case: nearly every word capitalised) or ``"caps"`` (ALL CAPS)."""
    n_cap = n_low = n_upper = n_alpha = 0
    for tok in tokens.text:
        first = tok[0]
        if not first.isalpha():
            continue
        n_alpha += 1
        if len(tok) >= 2 and tok.isupper():
            n_upper += 1
            continue
        if first.isupper():
            n_cap += 1
        elif tok.lower() not in _MINOR_WORDS:
            n_low += 1
    if n_alpha >= 3 and n_upper >= 0.8 * n_alpha:
        return "caps"
    if n_cap >= 2 and n_low * 6 <= n_cap:
        return "title"
    return "sentence"


# --- the company table --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KnownCompany:
    """One known company.

    :param name: canonical name (the entity's key), e.g. ``"Apple"``.
    :param aliases: every alias that resolves to it, e.g. ``("Apple Inc.", "Apple", "AAPL")``.
    :param tickers: its US ticker symbols.
    :param source: ``"pytickersymbols"``, ``"companies.json"`` or both joined by ``+``.
    """

    name: str
    aliases: tuple[str, ...]
    tickers: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class _Table:
    index: dict[tuple[str, ...], tuple[str, bool]]     # alias tokens -> (canonical, weak)
    max_len: dict[str, int]                             # first alias token -> longest alias (tokens)
    folded: dict[str, str]                              # case-folded alias -> canonical (unique ones)
    companies: dict[str, KnownCompany]


_PAREN_RE = re.compile(r"\s*\([^)]*\)")
_SHARE_CLASS_RE = re.compile(r"\s+Class\s+[A-Z]\b.*$")


def _clean_listed_name(name: str) -> str:
    name = _normalize_text(name)
    name = _PAREN_RE.sub("", name)
    name = _SHARE_CLASS_RE.sub("", name)
    return " ".join(name.split()).strip(" ,")


def _strip_suffixes(name: str) -> list[str]:
    """Progressively shorter forms without legal/holding suffixes: ``"HSBC Holdings plc"`` ->
    ``["HSBC Holdings", "HSBC"]``; a leading ``The`` goes too."""
    corporate = _lists()["corporate"]
    out: list[str] = []
    words = name.replace(",", " ").split()
    if len(words) > 1 and words[0].lower() == "the":
        words = words[1:]
        out.append(" ".join(words))
    while len(words) > 1:
        last = words[-1].lower().rstrip(".")
        if last in corporate or last.replace(".", "") in corporate:
            words = words[:-1]
            while len(words) > 1 and words[-1] in {"&", "and"}:
                words = words[:-1]
            out.append(" ".join(words))
        else:
            break
    return out


def _canonical_of_listed(name: str) -> str:
    """The canonical name of a listed company: the name without legal-form suffixes (not ``Group``)."""
    name = _DISPLAY_FIXES.get(name, name)
    legal = _lists()["corporate"] - {"group", "holdings", "holding", "companies"}
    words = name.replace(",", " ").split()
    if len(words) > 1 and words[0].lower() == "the":
        words = words[1:]
    legal = {w.replace(".", "") for w in legal}
    while len(words) > 1 and words[-1].lower().replace(".", "") in legal:
        candidate = words[:-1]
        while len(candidate) > 1 and candidate[-1] in {"&", "and"}:
            candidate = candidate[:-1]
        if len(candidate) == 1 and _token_class(candidate[0]) & _STOPPISH:
            break   # "Southern Company" stays, "Next plc" stays
        words = candidate
    return " ".join(words)


def _ascii_fold(name: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch))


def _us_tickers(record: Mapping[str, Any]) -> list[str]:
    """US ticker symbols of a listed company: its primary symbol when plain (``AAPL``, ``BRK.B``),
    else its NYSE/NASDAQ listings (ADRs of a European company)."""
    plain = re.compile(r"[A-Z]{1,5}(?:\.[A-C])?")     # BRK.B, not LLOY.L (London) nor SAP.F
    symbol = record.get("symbol")
    if isinstance(symbol, str) and plain.fullmatch(symbol):
        return [symbol]
    out: list[str] = []
    for listing in record.get("symbols") or ():
        google = listing.get("google") if isinstance(listing, Mapping) else None
        if isinstance(google, str) and google.startswith(("NYSE:", "NASDAQ:")):
            sym = google.split(":", 1)[1].replace("-", ".")
            if plain.fullmatch(sym) and sym not in out:
                out.append(sym)
    return out


def _ticker_usable(sym: str) -> bool:
    letters = sym.replace(".", "")
    if not letters.isalpha() or len(letters) < 2:
        return False
    if len(letters) == 2 and sym not in _TWO_LETTER_TICKERS:
        return False
    low = sym.lower()
    if low in _TICKER_WORDS or low in WEAK_NAMES:
        return False
    return not _token_class(sym) & _STOPPISH


def _listed_records() -> Iterator[Mapping[str, Any]]:
    try:
        data = import_module("pytickersymbols.indices_data")
    except ImportError:
        logger.warning("pytickersymbols is not installed: only models/companies.json names are known")
        return
    indices = getattr(data, "INDICES", {})
    if not isinstance(indices, Mapping):
        return
    for index in indices.values():
        if not isinstance(index, Mapping):
            continue
        for record in index.get("companies") or ():
            if isinstance(record, Mapping) and isinstance(record.get("name"), str):
                yield record


def _bundled_names() -> dict[str, str]:
    from finpulse.models.tickers import COMPANIES_FILE   # the bundled name -> ticker list

    raw = json.loads(COMPANIES_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in raw.items() if not k.startswith("_") and isinstance(v, str)}


# alias strengths (lower wins a collision)
_P_NAME, _P_BUNDLED, _P_DERIVED, _P_TICKER = 0, 1, 2, 3


@lru_cache(maxsize=1)
def _table() -> _Table:
    aliases: dict[str, dict[str, int]] = {}          # canonical -> {alias: strength}
    tickers: dict[str, list[str]] = {}
    sources: dict[str, set[str]] = {}

    def add(canon: str, alias: str, strength: int) -> None:
        alias = " ".join(_normalize_text(alias).split())
        if not alias:
            return
        entry = aliases.setdefault(canon, {})
        entry[alias] = min(strength, entry.get(alias, strength))

    for record in _listed_records():
        listed = _clean_listed_name(str(record["name"]))
        if not listed:
            continue
        canon = _canonical_of_listed(listed)
        sources.setdefault(canon, set()).add("pytickersymbols")
        add(canon, canon, _P_NAME)
        add(canon, listed, _P_NAME)
        if listed in _DISPLAY_FIXES:
            add(canon, _DISPLAY_FIXES[listed], _P_NAME)
        for form in _strip_suffixes(_DISPLAY_FIXES.get(listed, listed)):
            add(canon, form, _P_DERIVED)
        for sym in _us_tickers(record):
            if sym not in tickers.setdefault(canon, []):
                tickers[canon].append(sym)

    # tickers -> listed canonical names (unique ones only)
    by_ticker: dict[str, set[str]] = {}
    for canon, syms in tickers.items():
        for sym in syms:
            by_ticker.setdefault(sym, set()).add(canon)

    bundled = _bundled_names()
    bundled_canon: dict[str, str] = {}
    for name, sym in bundled.items():
        owners = by_ticker.get(sym, set())
        if len(owners) == 1:
            canon = next(iter(owners))
        else:
            canon = bundled_canon.setdefault(sym, name)      # the file's first name for the ticker
            if sym not in tickers.setdefault(canon, []):
                tickers[canon].append(sym)
        sources.setdefault(canon, set()).add("companies.json")
        add(canon, name, _P_BUNDLED)
    for alias, target in _EXTRA_ALIASES.items():
        if target in aliases:
            add(target, alias, _P_BUNDLED)

    for canon in list(aliases):
        for alias in list(aliases[canon]):
            folded = _ascii_fold(alias)
            if folded != alias:
                add(canon, folded, _P_DERIVED)
        for sym in tickers.get(canon, ()):
            if _ticker_usable(sym):
                add(canon, sym, _P_TICKER)

    # resolve collisions: the strongest claim wins; a tie between two companies drops the alias
    claims: dict[tuple[str, ...], dict[str, int]] = {}
    for canon, entry in aliases.items():
        for alias, strength in entry.items():
            toks = _alias_tokens(alias)
            if not toks:
                continue
            owners = claims.setdefault(toks, {})
            owners[canon] = min(strength, owners.get(canon, strength))
    index: dict[tuple[str, ...], tuple[str, bool]] = {}
    kept: dict[str, list[str]] = {c: [] for c in aliases}
    for toks, owners in claims.items():
        best = min(owners.values())
        winners = [c for c, s in owners.items() if s == best]
        if len(winners) != 1:
            continue
        canon = winners[0]
        weak = _weak_alias(toks, best)
        if weak is None:
            continue
        index[toks] = (canon, weak)
        kept[canon].append(" ".join(toks))
    max_len: dict[str, int] = {}
    for toks in index:
        max_len[toks[0]] = max(max_len.get(toks[0], 0), len(toks))
    folded_claims: dict[str, set[str]] = {}
    for toks, (canon, _weak) in index.items():
        if len(toks) == 1 and toks[0].isupper():
            continue
        folded_claims.setdefault(" ".join(toks).casefold(), set()).add(canon)
    folded_map = {k: next(iter(v)) for k, v in folded_claims.items() if len(v) == 1}
    companies = {
        canon: KnownCompany(
            name=canon,
            aliases=tuple(dict.fromkeys(kept[canon])),
            tickers=tuple(tickers.get(canon, ())),
            source="+".join(sorted(sources.get(canon, set()))),
        )
        for canon in sorted(aliases)
    }
    return _Table(index=index, max_len=max_len, folded=folded_map, companies=companies)


def _weak_alias(toks: tuple[str, ...], strength: int) -> bool | None:
    """Whether an alias is weak (an ordinary word), or ``None`` when it is not to be used at all."""
    if len(toks) == 1:
        tok = toks[0]
        if len(tok) < 2:
            return None
        flags = _token_class(_strip_possessive(tok))
        if tok.isupper() and len(tok) >= 2:
            if strength == _P_TICKER:
                return False
            return None if flags & _ACRO else False     # "HP", "BT" yes; "CEO" no
        if flags & (_FUNC | _TIME | _ROLE | _JUNK | _PLACE | _GENERIC | _CONN | _CORP | _DIGIT):
            if strength == _P_DERIVED:
                return None         # "News" from "News Corp", "Phoenix" from "Phoenix Group"
            return True
        return tok.lower() in WEAK_NAMES
    # several words: weak when every word is an ordinary word ("Best Buy", "Match Group")
    return all(
        (_token_class(_strip_possessive(t)) & _STOPPISH) or t.lower() in WEAK_NAMES or t == "&" for t in toks
    )


def known_companies() -> dict[str, KnownCompany]:
    """The known companies, by canonical name (built on first use, then cached).

    :returns: ``{"Apple": KnownCompany(name="Apple", aliases=("Apple", "Apple Inc", "AAPL"), ...), ...}``;
        aliases are given as token sequences joined by spaces (``"Apple Inc"`` for ``"Apple Inc."``).
    """
    return dict(_table().companies)


def canonical(name: str) -> str | None:
    """Resolve an alias to its company's canonical name.

    :param name: a company name, alias or ticker: ``"Apple Inc."``, ``"Apple"``, ``"AAPL"``, ``"$AAPL"``;
        exact case first, then case-insensitively (names only, not tickers).
    :returns: the canonical name (``"Apple"``), or ``None`` for a name that is not known.
    """
    if not isinstance(name, str):
        return None
    toks = _alias_tokens(name)
    if not toks:
        return None
    table = _table()
    hit = table.index.get(toks)
    if hit is None and toks[-1] != _strip_possessive(toks[-1]):
        hit = table.index.get(toks[:-1] + (_strip_possessive(toks[-1]),))
    if hit is not None:
        return hit[0]
    return table.folded.get(" ".join(toks).casefold())


# --- candidates ----------------------------------------------------------------------------------------

def candidate_key(name: str) -> str | None:
    """Normalise a candidate name to its key.

    :param name: e.g. ``"China  Evergrande Group's"``, ``"SVB Financial Group"``, ``"U.S."``.
    :returns: ``"China Evergrande"``, ``"SVB"``, ``"US"``: tokens joined by one space, possessive and
        punctuation stripped, legal/holding suffixes and a leading ``The`` dropped; an acronym followed
        only by corporate words reduced to the acronym. ``None`` when nothing is left.
    """
    toks = [_undot(_strip_possessive(t)) for t in _alias_tokens(name)]
    return _key(toks)


def _key(toks: list[str]) -> str | None:
    lists = _lists()
    toks = [t for t in toks if t]
    while toks and toks[0].lower() in {"the", "&"}:
        toks = toks[1:]
    while len(toks) > 1 and (toks[-1].lower().replace(".", "") in lists["corporate"] or toks[-1] == "&"
                             or toks[-1].lower() in lists["connector"]):
        toks = toks[:-1]
    if len(toks) > 1 and _is_acronym(toks[0]) and all(t.lower() in lists["acronym_tail"] for t in toks[1:]):
        toks = toks[:1]
    return " ".join(toks) or None


def _initials(toks: Iterable[str]) -> str:
    lists = _lists()
    out = []
    for t in toks:
        low = t.lower()
        if low in lists["connector"] or low in {"the", "and"}:
            continue
        out.append(t if _is_acronym(t) else t[0])
    return "".join(out).upper()


@dataclass(frozen=True, slots=True)
class Entities:
    """The entities of one article.

    :param known: canonical names of the known companies mentioned, in order of first mention.
    :param candidates: candidate keys of other names (emerging entities), in order of first mention.
    :param expansions: ``(acronym, expanded key)`` pairs seen in the article, e.g.
        ``(("SVB", "Silicon Valley Bank"),)``; the acronym's candidate is reported as the expansion.
    """

    known: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    expansions: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Known names, then candidates."""
        return self.known + self.candidates


@dataclass(slots=True)
class _Found:
    key: str
    tokens: tuple[str, ...]
    start: int          # token index in the segment
    end: int            # exclusive
    segment: int
    acronym: bool


def _match_known(tokens: _Tokens, mode: str, table: _Table) -> list[tuple[int, int, str]]:
    """Known-company matches ``(start, end, canonical)``, longest first, left to right."""
    out: list[tuple[int, int, str]] = []
    text, base, hard, initial = tokens.text, tokens.base, tokens.hard, tokens.initial
    n = len(text)
    i = 0
    while i < n:
        longest = table.max_len.get(text[i]) or table.max_len.get(base[i])
        if not longest:
            i += 1
            continue
        found = None
        for length in range(min(longest, n - i), 0, -1):
            j = i + length
            if any(hard[k] for k in range(i + 1, j)) or any(tokens.possessive[k] for k in range(i, j - 1)):
                continue
            hit = table.index.get(text[i:j])
            if hit is None and base[j - 1] != text[j - 1]:
                hit = table.index.get(text[i:j - 1] + (base[j - 1],))
            if hit is None:
                continue
            canon, weak = hit
            if weak and (mode != "sentence" or initial[i]):
                continue
            if length == 1 and mode == "caps":
                continue
            found = (i, j, canon)
            break
        if found is None:
            i += 1
        else:
            out.append(found)
            i = found[1]
    return out


def _runs(tokens: _Tokens, covered: list[bool], mode: str) -> Iterator[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of capitalised tokens (connectors inside), not crossing breaks."""
    split = _SPLIT_TITLE if mode == "title" else _SPLIT_SENTENCE
    n = len(tokens.text)
    start = -1
    for i in range(n + 1):
        ok = False
        if i < n and not covered[i]:
            tok = tokens.base[i]
            flags = _token_class(tok)
            joinable = start >= 0 and not tokens.hard[i]
            if flags & _CONN and joinable and tok != tok.upper() or tok == "&" and joinable:
                ok = True
            elif tok[0].isupper() and not flags & split:
                ok = start < 0 or not tokens.hard[i]
                if not ok:       # a break: close the run, start a new one here
                    yield start, i
                    start = i
                    continue
        if ok:
            if start < 0:
                start = i
            if tokens.possessive[i]:
                yield start, i + 1
                start = -1
            continue
        if start >= 0:
            yield start, i
            start = -1


def _candidates_in(tokens: _Tokens, segment: int, mode: str, covered: list[bool]) -> list[_Found]:
    out: list[_Found] = []
    lists = _lists()
    for start, end in _runs(tokens, covered, mode):
        # trim connectors at both edges, and junk at the edges (sentence case)
        while start < end and (_token_class(tokens.base[start]) & (_CONN | _JUNK | _CORP)
                               or tokens.base[start] == "&"):
            start += 1
        while end > start and (_token_class(tokens.base[end - 1]) & (_CONN | _JUNK)
                               or tokens.base[end - 1] == "&"):
            end -= 1
        if start >= end:
            continue
        words = [_undot(t) for t in tokens.base[start:end]]
        if end - start == 1:
            word = words[0]
            if _is_acronym(tokens.base[start]):
                if _token_class(tokens.base[start]) & _NOT_NAME_ALONE or _token_class(word) & _NOT_NAME_ALONE:
                    continue
                out.append(_Found(word, (word,), start, end, segment, True))
                continue
            if mode != "sentence" or len(word) < 2 or _token_class(word) & _NOT_NAME_ALONE:
                continue
            if word.lower() in WEAK_NAMES:
                continue
            if tokens.initial[start] and not tokens.possessive[start]:
                continue
            key = _key([word])
            if key:
                out.append(_Found(key, (word,), start, end, segment, False))
            continue
        # several words
        flags = [_token_class(t) for t in tokens.base[start:end]]
        name_words = [f for t, f in zip(words, flags, strict=True)
                      if not f & (_CONN | _CORP) and t != "&"]
        if mode == "title":
            if all(f & (_STOPPISH | _CONN) for f in flags) or all(f & (_PLACE | _GENERIC | _ACRO) for f in name_words):
                continue
        elif all(f & (_JUNK | _PLACE | _GENERIC | _ACRO | _ROLE | _TIME | _FUNC) for f in name_words):
            if not all(f & _GENERIC for f in name_words) or len(name_words) < 2:
                continue
        phrase = " ".join(words).lower()
        if phrase in lists["phrases"]:
            continue
        key = _key(words)
        if not key or key.lower() in lists["phrases"]:
            continue
        if " " not in key:       # "Evergrande Group" -> "Evergrande": a one-word key from a suffix
            if _token_class(key) & _NOT_NAME_ALONE and not _is_acronym(key):
                continue
        out.append(_Found(key, tuple(words), start, end, segment, _is_acronym(key)))
    return out


def _segments(title: str, summary: str | None) -> list[str]:
    out = [_normalize_text(title or "")]
    if summary:
        text = html.unescape(_TAG_RE.sub(" ", summary))
        text = " ".join(text.split())
        if len(text) > SUMMARY_CHARS:
            cut = text.rfind(" ", 0, SUMMARY_CHARS)
            text = text[:cut if cut > 0 else SUMMARY_CHARS]
        out.append(_normalize_text(text))
    return out


def extract_entities(title: str, summary: str | None = None) -> Entities:
    """Known companies and candidate names of one article.

    :param title: the headline.
    :param summary: its description or summary (HTML allowed; the first :data:`SUMMARY_CHARS` characters
        after tags are removed are searched), or ``None``.
    :returns: :class:`Entities`, de-duplicated and in order of first mention; the same input always gives
        the same output.
    """
    table = _table()
    known: list[str] = []
    found: list[_Found] = []
    known_initials: set[str] = set()
    pairs: dict[str, str] = {}
    for seg_no, text in enumerate(_segments(title if isinstance(title, str) else "", summary)):
        if not text:
            continue
        tokens = _tokenize(text)
        if not tokens.text:
            continue
        mode = _mode(tokens)
        covered = [False] * len(tokens.text)
        for start, end, canon in _match_known(tokens, mode, table):
            if canon not in known:
                known.append(canon)
            for k in range(start, end):
                covered[k] = True
            if end - start > 1:
                known_initials.add(_initials(tokens.base[start:end]))
        if mode == "caps":
            continue
        seg_found = _candidates_in(tokens, seg_no, mode, covered)
        # "Silicon Valley Bank (SVB)" / "SVB (Silicon Valley Bank)": adjacent in parentheses
        for a, b in zip(seg_found, seg_found[1:], strict=False):
            if b.start == a.end and tokens.gaps[b.start].strip() == "(":
                long, short = (a, b) if b.acronym and not a.acronym else (b, a) if a.acronym and not b.acronym \
                    else (None, None)
                if long is not None and short is not None and " " in long.key:
                    pairs[short.key] = long.key
        found.extend(seg_found)
    # acronyms whose expansion appears in the article (initials match)
    long_names = [f for f in found if not f.acronym and len(f.tokens) > 1]
    for f in found:
        if f.acronym and f.key not in pairs:
            for g in long_names:
                if _initials(g.tokens) == f.key or _initials(candidate_key(" ".join(g.tokens)) or "") == f.key:
                    pairs[f.key] = g.key
                    break
    candidates: list[str] = []
    known_folded = {k.casefold() for k in known}
    for f in found:
        key = pairs.get(f.key, f.key)
        if f.acronym and f.key not in pairs and f.key in known_initials:
            continue            # "Bank of America (BOA)": the acronym of a known name
        if key.casefold() in known_folded:
            continue
        if canonical(key) is not None and canonical(key) in known:
            continue
        if key not in candidates:
            candidates.append(key)
    expansions = tuple((a, e) for a, e in pairs.items() if e in candidates)
    return Entities(known=tuple(known), candidates=tuple(candidates), expansions=expansions)
