"""Pure entity extraction for headlines: known companies (with aliases) and candidate emerging names.

A headline's scopes name a topic and tickers; a crisis about a company that no list holds (Silicon
Valley Bank in March 2023: "SVB", "Silicon Valley Bank", "SVB Financial", spread over many topics)
needs a scope named after the company. This module finds the names; turning them into scopes
(``entity:<name>``) and counting them is done elsewhere.

**Known companies** come from the offline index-constituent lists shipped in the PyPI package
``pytickersymbols`` (MIT licence; about 1,800 companies of 20 indices: S&P 500/600/100, NASDAQ 100,
Dow Jones, FTSE 100, DAX, MDAX, SDAX, TecDAX, CAC 40, CAC Mid 60, EURO STOXX 50, IBEX 35, AEX,
BEL 20, Switzerland 20, OMX Stockholm 30, OMX Helsinki 25, Nikkei 225; names and ticker symbols,
read from its Python module ``pytickersymbols.indices_data``, never from the network) and from
``models/companies.json`` (the small bundled list of :mod:`finpulse.models.tickers`). Each company
gets one canonical name (the listed name without its legal-form suffix: ``"Apple"`` for
``"Apple Inc."``) and aliases that all resolve to it:

* the listed name (``"Apple Inc."``); the name without legal or holding suffixes (``Inc``, ``Corp``,
  ``Corporation``, ``Co``, ``plc``, ``Ltd``, ``AG``, ``SE``, ``SA``, ``N.V.``, ``Group``, ``Holdings``,
  ...); the first word of a name whose other words only describe the trade (``"Agilent"`` for
  ``"Agilent Technologies"``, ``"Gilead"`` for ``"Gilead Sciences"``); an ASCII-folded spelling
  (``"Deutsche Borse"``); the names ``companies.json`` gives it and a few short names the news uses
  (``"Lloyds"``, ``"Goldman"``);
* its US ticker symbols (``"AAPL"``) of 3+ letters that are no English word nor common acronym
  (``ALL``, ``NOW``, ``CEO``, ``MPC``, ...; 2-letter symbols such as ``GM``, ``GE``, ``MS`` are too often
  something else), matched only as upper-case tokens used as a symbol: ``$AAPL``, ``(AAPL)``,
  ``NYSE:AAPL``, a 4+-letter symbol, or a company word nearby (``"shares"``, ``"stock"``, ...).

An alias that two companies claim with the same strength is dropped as ambiguous (the listed name
beats a ``companies.json`` name, which beats a derived form, which beats a ticker). Names match
case-sensitively, and case-insensitively when the headline writes them capitalised or in capitals
(``"ACADIA Pharmaceuticals"``). A one-word alias that is an ordinary word or a common surname
(``"Target"``, ``"Visa"``, ``"Gates"``, ``"Williams"``; :data:`WEAK_NAMES` and the stop lists) is
*weak*: it is matched only mid-sentence in a sentence-case headline, not next to another capitalised
word (``"Bill Gates"``) and only with a company word nearby (``"shares of Target"``, ``"retailer
Target"``); an ordinary word that is a stripped form (``"Next"`` of ``"Next plc"``) is no alias at all.
No one-word alias matches right after a first name (``"Andrew Marvell"``, ``"Serena Williams"``). A
delisted or failed company (Lehman Brothers, SVB, First Republic)
is not known: that is what candidates are for.

**Candidates** for emerging entities are the other names in a headline:

* capitalised multi-word names (``"Silicon Valley Bank"``, ``"First Republic Bank"``; ``of`` and
  ``&`` may join words: ``"Bank of Hope"``), single capitalised words that are not the first word of a
  sentence or clause (``"... as Evergrande defaults"``) and acronyms anywhere (``"SVB"``, ``"FTX"``);
* never the words of the stop lists (:func:`stop_words`): function and number words, days, months and
  other time words, titles and roles (``"Chief Executive"``, ``"President"``), headline vocabulary
  (``"Stocks"``, ``"Shares"``, ``"Highs"``, ``"Plunge"``, ...), countries, nationalities, large cities,
  US states and regions, generic institution words (``"Government"``, ``"Bank"`` alone) and common
  acronyms (``"CEO"``, ``"IPO"``, ``"NHS"``); a name made only of such words (``"UK Government"``,
  ``"New York"``, ``"Bank of England"``) is no candidate either;
* in a **Title Case** headline (every word capitalised, as some sources write them: "Stocks That Hit
  52-Week Highs On Friday"), capitals say nothing, so the rule is conservative: acronyms, known names,
  and runs of 2+ words (broken at every stop word) that end in a corporate word (``Bank``, ``Capital``,
  ``Group``, ``Holdings``, ``Brothers``, ``Airlines``, ``Pharmaceuticals``, ...: "Silicon Valley Bank
  Shares Plunge" gives ``"Silicon Valley Bank"``; "Tom Hanks Movie" and a lone word give nothing).
  An ALL-CAPS headline gives only known multi-word names.

A candidate's key (:func:`candidate_key`) has its whitespace collapsed, possessive ``'s`` and
punctuation stripped, legal and holding suffixes dropped (``"Evergrande Group"`` -> ``"Evergrande"``),
and an acronym followed only by corporate words reduced to the acronym (``"SVB Financial Group"`` ->
``"SVB"``). When an acronym and its expansion appear in the same article (``"Silicon Valley Bank
(SVB)"``, or initials that match), both give one key, the expanded name, and the pair is reported in
:attr:`Entities.expansions` so that a caller can keep the mapping over a stream. A known company's
ticker that is not used as a symbol is no candidate either. Names of people come through as candidates
(``"Boris Johnson"``, ``"Trump"``; only a lone common first name such as ``"Harry"`` is dropped), and so
do other proper names the stop lists do not know (events, small places, products, newspaper columns).

A summary is searched too (HTML tags removed, the first :data:`SUMMARY_CHARS` characters). Everything is
pure: nothing is read at import; the company table is built on first use (about 0.1-0.2 s) and cached.
Matching looks the headline's token sequences up in a dictionary of alias token sequences (longest
first): an extraction costs about 50 microseconds per headline (10,000 headlines in about 0.5 s on a
2-core machine), a few hundred with a summary.
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
    "SUMMARY_CHARS",
    "WEAK_NAMES",
    "Entities",
    "KnownCompany",
    "candidate_key",
    "canonical",
    "extract_entities",
    "known_companies",
    "stop_words",
]

#: Characters of a summary that are searched (after HTML tags are removed): the lede names the
#: entities; a long body adds noise and cost.
SUMMARY_CHARS = 600

# --- stop lists (lower case; see the module docstring) --------------------------------------------------

_FUNCTION_WORDS = """
a an the and or but nor of in on at to for by with from as into onto over under up down out off about above
below after before since until till amid amidst among against between through throughout during without within
via per vs versus than then so if when while where which who whom whose what why how is are was were be been
being am do does did done doing has have had having will would shall should can could may might must not no
yes all any some each every both either neither more most less least many much few several such this that
these those it its i me my mine we our ours us you your yours he him his she her hers they them their theirs
here there now just only also even still yet again too very really ever never always often already soon last
next new old own other others another same get gets got getting go goes going gone went make makes made making
take takes took taken give gives gave given say says said see sees saw seen let lets put puts keep keeps come
comes came back like unlike whether because although though however despite toward towards around across along
behind beyond near inside outside upon amongst whilst thus hence why's what's who's it's here's there's that's
don't doesn't didn't won't can't isn't aren't wasn't weren't hasn't haven't i'm i've i'd i'll we're we've
we'll you're you've you'll they're they've he's she's let's oh hey ok okay yeah please thanks welcome goodbye
hello
"""

_NUMBER_WORDS = """
one two three four five six seven eight nine ten eleven twelve thirteen fifteen twenty thirty forty fifty
hundred hundreds thousand thousands million millions billion billions trillion dozen dozens half second third
fourth fifth tenth
"""

_TIME_WORDS = """
monday tuesday wednesday thursday friday saturday sunday mondays fridays weekend weekends weekday january
february march april may june july august september october november december jan feb mar apr jun jul aug sep
sept oct nov dec today tonight tomorrow yesterday morning afternoon evening night midnight noon midday day
days week weeks weekly month months monthly year years yearly annual annually quarter quarters quarterly
decade decades century season seasonal spring summer autumn winter christmas easter halloween thanksgiving
ramadan diwali hanukkah xmas eve holiday holidays time times date dates hour hours minute minutes moment era
early late earlier later latest past future recent recently ago daily ytd yoy qoq fy qtr
"""

_ROLE_WORDS = """
mr mrs ms miss dr sir dame lord lady prof professor president presidents vice minister ministers prime
chancellor secretary governor governors mayor senator senators sen rep congressman congresswoman king queen
prince princess duke duchess pope chairman chairwoman chair chief chiefs executive executives ceo ceos cfo coo
cto founder founders co-founder boss bosses head heads director directors manager managers analyst analysts
economist economists spokesman spokeswoman spokesperson official officials leader leaders commissioner
ambassador judge judges lawmaker lawmakers regulator regulators investor investors trader traders banker
bankers billionaire billionaires tycoon mogul chairperson deputy acting former ex admiral captain colonel
sergeant officer officers inspector detective coach correspondent correspondents editor editors reporter
reporters presenter columnist
"""

_JUNK_WORDS = """
stock stocks share shares shareholder shareholders market markets price prices pricing trading trade trades
traded earnings revenue revenues sale sales profit profits loss losses result results report reports reported
reporting guidance outlook forecast forecasts estimate estimates est eps adj rev dividend dividends buyback
buybacks rating ratings rated upgrade upgrades upgraded downgrade downgrades downgraded maintain maintains
maintained initiate initiates initiated initiation initiations reiterate reiterates reiterated raise raises
raised lower lowers lowered cut cuts boost boosts boosted expect expects expected target targets tgt pt buy
buys buying sell sells selling sold hold holds neutral overweight underweight outperform outperforms
underperform underperforms perform performs performing performance equal-weight sector sectors company
companies firm firms business businesses deal deals merger mergers acquisition acquisitions acquire acquires
acquired offer offers offering moving mover movers biggest big bigger top highs high higher highest low lows
lowest gainer gainers loser losers decliner decliners session sessions mid-day pre-market premarket
after-hours mid-morning mid-afternoon update updates updated news alert alerts watch watching hit hits hitting
plunge plunges plunged soar soars soared surge surges surged jump jumps jumped fall falls fell falling rise
rises rose rising drop drops dropped slump slumps slumped tumble tumbles tumbled crash crashes crashed rally
rallies rallied climb climbs climbed gain gains gained slide slides slid sink sinks sank spike spikes spiked
spiking slip slips slipped rebound rebounds recover recovers recovery announce announces announced
announcement launch launches launched files filed filing sign signs signed agree agrees agreed agreement
agreements approve approves approved approval warn warns warned warning warnings plan plans planned call calls
called set sets beat beats miss misses missed tops fails fail failed failure halt halts halted suspend
suspends suspended close closes closed closing open opens opened opening live breaking exclusive analysis
opinion editorial comment review reviews letters podcast video videos picture pictures photo photos explainer
explained guide quiz recap preview summary wrap briefing newsletter blog chatter tweets tweet interview data
survey poll polls volume volumes futures options option puts yields yield debt debts cash money funding assets
value values valuation growth economy economic economics crisis crises inflation recession rates rate interest
tax taxes budget spending cost costs bill bills jobs job workers worker staff employees people public policy
policies law laws rules rule war wars talks talk vote votes election elections campaign covid covid-19
coronavirus virus pandemic epidemic outbreak lockdown lockdowns quarantine vaccine vaccines brexit climate oil
gas petrol fuel gold silver commodities commodity crypto bitcoin cryptocurrency blockchain tech internet
online digital social media world worldwide overall total record records percent pct cent full part best worst
better worse good bad great strong weak huge major minor key main small large mid small-cap large-cap mid-cap
micro-cap positive negative mixed upbeat bullish bearish upside downside inline strength hot cold fresh stake
stakes position positions investment investing invest invests portfolio portfolios return returns income net
gross margin margins highlights notable note notes names name list lists pick picks screen screens ranking
rank ranks chart charts technical technicals level levels support resistance breakout move moves moved meeting
meetings conference conferences event events presentation presentations hearing hearings trial trials test
tests testing study studies drug drugs treatment treatments patient patients disease diseases product products
customer customers consumer consumers client clients user users family families child children kids man men
woman women girl girls boy boys life lives death deaths dead killed story stories question questions answer
answers reason reasons way ways thing things lot lots kind everything something nothing anything everyone
someone nobody anyone brief briefs edition special dear meet sweep tape pulse peek ask asks view views terms
disclosed reportedly unexpected surprise surprises surprising change changes changed changing continue
continues continued remain remains remained begin begins began start starts started end ends ended help helps
helped need needs needed want wants wanted try tries tried use uses used using include includes included
including add adds added show shows showed shown find finds found lead leads leading led follow follows
following win wins won lose loses lost pay pays paid receive receives received provide provides provided
complete completes completed release releases released introduce introduces introduced appoint appoints
appointed names named reveal reveals revealed details detail tells told report's lawsuit lawsuits program
programs programme phase chapter strike strikes affairs radio rights movie film films book books music song
songs game match win super mother mum dad earth euro channel control love island isle black white work sport
sports masters commons pensions god festival wild doctors statement secrets duty fears hopes nurses utd fc
united city rovers wanderers athletic higher-than-expected lower-than-expected better-than-expected
worse-than-expected guardian observer papers reuters benzinga yahoo headlines headline front pages page
cartoon letters obituary
"""

_PLACE_WORDS = """
world europe european europeans asia asian asia-pacific africa african america american americans americas
latin north south east west northern southern eastern western central middle arctic antarctic atlantic pacific
mediterranean gulf caribbean scandinavia scandinavian nordic baltic balkans midlands uk u.k britain british
briton britons brits england english scotland scottish scots wales welsh ireland irish ulster london
manchester birmingham liverpool leeds glasgow edinburgh cardiff belfast bristol oxford cambridge westminster
whitehall downing us u.s usa united states washington york california texas florida illinois ohio michigan
georgia virginia carolina pennsylvania massachusetts jersey arizona nevada colorado oregon minnesota wisconsin
missouri tennessee kentucky alabama louisiana maryland indiana iowa kansas utah oklahoma arkansas mississippi
nebraska idaho hawaii alaska maine vermont connecticut delaware montana wyoming dakota hampshire chicago
boston seattle miami houston dallas atlanta detroit denver phoenix philadelphia angeles los francisco vegas
brooklyn manhattan hollywood canada canadian toronto montreal vancouver ottawa mexico mexican brazil brazilian
argentina argentinian chile chilean colombia colombian peru peruvian venezuela venezuelan cuba cuban germany
german germans berlin frankfurt munich hamburg france french paris italy italian italians rome milan spain
spanish madrid barcelona portugal portuguese lisbon netherlands dutch holland amsterdam belgium belgian
brussels switzerland swiss zurich geneva austria austrian vienna sweden swedish stockholm norway norwegian
oslo denmark danish copenhagen finland finnish helsinki iceland icelandic poland polish warsaw czech hungary
hungarian budapest greece greek athens turkey turkish istanbul ankara cyprus malta luxembourg romania romanian
bulgaria serbia croatia slovakia slovenia ukraine ukrainian ukrainians kyiv kiev russia russian russians
moscow belarus estonia latvia lithuania china chinese beijing shanghai shenzhen guangzhou wuhan hong kong
macau taiwan taiwanese taipei japan japanese tokyo osaka korea korean koreans seoul pyongyang india indian
indians delhi mumbai bangalore pakistan pakistani bangladesh lanka nepal singapore singaporean malaysia
malaysian indonesia indonesian jakarta thailand thai bangkok vietnam vietnamese philippines filipino manila
australia australian australians sydney melbourne zealand auckland iran iranian iraq iraqi syria syrian israel
israeli israelis gaza palestinian palestine lebanon jordan egypt egyptian saudi saudis arabia arabian emirates
uae dubai abu dhabi qatar qatari kuwait yemen oman bahrain afghanistan afghan nigeria nigerian kenya kenyan
ethiopia ghana uganda zimbabwe zambia morocco algeria tunisia libya sudan somalia congo angola mozambique
senegal bahamas bermuda cayman panama jamaica haiti guatemala honduras nicaragua ecuador bolivia paraguay
uruguay myanmar burma cambodia laos mongolia kazakhstan uzbekistan azerbaijan armenia moldova albania
macedonia bosnia kosovo montenegro rwanda tanzania cameroon mali niger chad botswana namibia madagascar
mauritius fiji tonga samoa greenland crimea donbas siberia tibet xinjiang hebei guangdong kashmir punjab
bengal catalonia bavaria flanders sicily sardinia corsica brittany normandy kent surrey sussex essex yorkshire
lancashire cornwall devon somerset norfolk suffolk derbyshire cumbria merseyside tyneside newcastle sheffield
nottingham leicester coventry southampton portsmouth brighton norwich plymouth aberdeen dundee swansea derry
dublin cork county province jewish muslim christian catholic islamic arab
"""

_GENERIC_WORDS = """
bank banks banking bancorp bancshares group holdings holding capital financial finance first national
international global general united trust partners energy power resources industries industrial technologies
technology systems solutions services service brands properties realty health healthcare pharmaceuticals
pharmaceutical pharma therapeutics biosciences airlines airline airways motors motor foods insurance
securities investments fund funds asset management advisors ventures exchange savings federal central reserve
royal standard premier association authority agency department ministry office council commission committee
board institute institution foundation society organisation organization union party parliament congress
senate house houses court courts police army navy force forces team club league cup championship olympics
olympic games government governments administration treasury fed eurozone state states city cities town towns
country countries region regions area areas home homes housing property land school schools university
universities college hospital hospitals museum church street road station airport port centre center labour
labor tory tories conservative conservatives democrat democrats democratic republican republicans liberal
liberals green greens industry sector market
"""

# Common first names: never a name on their own ("Harry", "Meghan"), fine inside one ("Boris Johnson").
_FIRST_NAMES = """
james john robert michael william david richard joseph thomas charles christopher daniel matthew anthony mark
donald steven paul andrew joshua kenneth kevin brian george timothy ronald edward jason jeffrey ryan jacob
gary nicholas eric jonathan stephen larry justin scott brandon benjamin samuel gregory alexander frank patrick
raymond jack dennis jerry tyler aaron jose adam nathan henry douglas zachary peter kyle noah ethan jeremy
walter christian keith roger terry austin sean gerald carl harold dylan arthur lawrence jordan jesse bryan
billy bruce gabriel joe logan albert willie alan eugene russell vincent philip bobby johnny bradley harry
boris rishi keir liz jim alison theresa nigel jeremy ed tony gordon elon jeff bill tim sam max ben tom nick
mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty sandra margaret
ashley kimberly emily donna michelle carol amanda melissa deborah stephanie rebecca sharon laura cynthia
dorothy amy kathleen angela shirley brenda emma anna pamela nicole samantha katherine christine helen debra
rachel carolyn janet maria catherine heather diane olivia julie joyce victoria ruth virginia lauren kelly
christina joan evelyn judith andrea hannah megan cheryl jacqueline martha madison teresa gloria sara janice
ann kathryn abigail sophia frances jean alice judy isabella julia grace amber denise danielle marilyn beverly
charlotte natalie theresa diana brittany doris kayla alexis lori marie meghan kate harriet ella lucy sophie
chloe jane priti kamala hillary angela ursula christine janet jerome
"""

_CONNECTORS = "of & de du des la le van von der den del di da"

_CORPORATE_SUFFIXES = """
inc incorporated corp corporation co company companies cos ltd limited plc llc lp l.p llp ag se sa s.a nv n.v
bv b.v ab asa oyj oy a/s spa s.p.a kgaa gmbh sarl pte bhd tbk group holdings holding
"""

# Words that end a company's name in a Title Case headline ("Silicon Valley Bank", "Lehman Brothers").
_STRONG_TAILS = """
bank bancorp bancshares banco banca bankshares group holdings holding capital financial partners securities
brothers bros inc incorporated corp corporation co company ltd limited plc llc lp ag se sa nv gmbh airlines
airways air motors pharmaceuticals pharma therapeutics biosciences biotherapeutics technologies labs
laboratories industries investments insurance assurance trust ventures management advisors realty reit mining
minerals resources petroleum networks exchange
"""

# Words after a first word that only say the trade: "Agilent Technologies" -> also "Agilent".
_DESCRIPTORS = """
technologies technology pharmaceuticals pharmaceutical pharma therapeutics industries systems solutions brands
automotive laboratories labs biosciences sciences scientific networks communications entertainment electronics
enterprises worldwide international healthcare health gold mining resources foods financial semiconductor
semiconductors software holdings group inc corporation corp plc company co ltd ag se sa brothers bros
"""

# Words after an acronym that still mean "the acronym's company" ("SVB Financial Group" -> "SVB").
_ACRONYM_TAIL_WORDS = """
financial bank bancorp bancshares capital group holdings holding trading securities partners inc corp co ltd
plc llc sa ag se nv
"""

_COMMON_ACRONYMS = """
UK US USA UAE EU UN UNESCO UNICEF AI IT TV PC PM AM MP MPS MEP MEPS CEO CFO COO CTO CIO GDP CPI PPI PMI IPO
ETF ETN SEC FED FOMC FDA FBI CIA NSA NASA NATO OPEC OECD IMF WHO WTO ECB BOE BOJ PBOC RBA RBI SNB ESG EV NHS
BBC ITV CNN CNBC NBC ABC CBS NPR PBS HBO NFL NBA MLB NHL NCAA FIFA UEFA FA EFL RFU WTA ATP ICC IOC GP COVID
SARS MERS HIV AIDS LGBT LGBTQ DIY HQ PR HR VAT ISA HMRC DWP ONS OBR IFS CBI BRC FCA PRA CMA FTC DOJ DOE DOD
EPA FAA NTSB FDIC OCC CFTC FINRA IRS NY NYC LA DC SF USD GBP EUR JPY CNY CHF GMT BST EST PST EDT ET UPDATE
NOTE ALERT BREAKING EXCLUSIVE LIVE NEW WATCH FAQ OK TBA TBD YOY QOQ YTD EPS PT PO PE PEG ROE ROA ROI EBIT
EBITDA AUM NAV FFO AFFO SPAC NFT DAO CBD THC API APP SAAS IOT AR VR XR ICU PPE SNP ANC ISIS IS IRA GOP DNC RNC
MAGA POTUS SCOTUS TUC S&P DAX FTSE CAC DJIA NASDAQ NYSE LSE VIX WTI LNG NGO BLM UFC WWE MMA RAF MOD NSW QLD
USPS DHS ICE CDC NIH DVLA DLR TFL DVD CD USB PDF PIN ID ATM SUV CO2 UNHCR WFP AFP AP PA DPA REIT BDC LP II III
IV VI VII FY M&A IP AGM EGM CGT NIC PAYE SME BNPL ESA SPX NDX NSE BSE TSX ASX HKEX SSE OTC ADR GDR LIBOR SOFR
SONIA QE QT AGI GPU CPU AMA DR MR MRS MS ST JR SR PLC INC LTD CORP LLC AG SE SA NV AB WSJ FT NYT CEOWORLD QR
KPI SMS URL WIFI USA'S TSA NBER BIS FSB IEA EIA ECJ ICJ Q1 Q2 Q3 Q4 H1 H2 GAAP USDA EMA JV VP SOURCE UNSC WWF
RSPCA NSPCC RNLI YMCA PTSD ADHD OCD MRI CT DNA RNA PCR GP'S A&E NCA CPS MI5 MI6 GCHQ KGB BCC CIPD RICS ACCA
ICAEW MPC CRC
"""

# Ordinary words and common surnames that are also names of listed companies: matched only mid-sentence
# in sentence case, away from other capitalised words. Built by checking every one-word alias against a
# frequency-ordered English vocabulary and the streams under shared/streams (see tests/test_entities.py).
WEAK_NAMES: frozenset[str] = frozenset("""
next southern match news arm box ball block screen fox target orange sharp pool douglas waters universal shift
partners admiral progressive evolution phoenix gates continental noble rogers berkeley interface hub diploma
brady sage dana rational visa snap zoom carnival square compass apollo genesis mercury vista deluxe cactus
stride harmonic recruit unite now public camden trinity liberty patriot pioneer summit sterling heritage
frontier horizon premier prime pinnacle legacy national american california golden boston principal oxford
imperial citizens core regions patrick progress lincoln rush element extreme charter cardinal tyler cincinnati
bread powell harmony penn albany lindsay gibraltar matthews insight employers disco sonic jacobs minerals
hawkins dover penguin werner beacon constellation integer catalyst edison fulton orion tyson vertex yokohama
norma lennox hayward ellington booking sabre knowles rollins everest scholastic hilltop align tapestry zebra
verve endeavour newell williams johnson jones smith brown taylor wilson davies evans thomas roberts walker
wright thompson white hughes edwards green hall wood harris martin jackson clarke clark turner hill moore
cooper ward morris king watson baker allen young scott mitchell kelly parker campbell stewart marshall bell
murphy graham hunt ford carter owen shaw lloyd wells fisher moody stanley russell gordon morgan howard bailey
dean ross chase abbott baxter marathon berkeley alliance express first premier fidelity mosaic harbor harbour
pacific atlantic titan atlas delta omega alpha beta sigma gamma union unity vista keystone bright reliance
ally allied aware discovery prudential standard equity capital crown regal royal nasdaq dow
""".split())


# English words that are also US ticker symbols of 3+ letters, beyond the stop lists.
_TICKER_WORDS = frozenset("""
air act adam ale ana are art ball ben big box cake calm can car cars cash chef con coo cool cost crow cub doc
dog eat eye fast fix fly fun gen go golf good hope ice icon joe key kid land life love low mac main man mind
nice now out pat peak peg pet play plus pool rare rex rock room run safe see sky step sun tech ten tree two
unit way well win wing wire wood work yes you zip ago arch bark bid bold bolt boom boot dash deal dine earn
echo ever fate fizz flex fold font fuel fund gold grow hair hear herd hire home hood jack jump kind lift link
live loan lock mark move nail nest note path pick pine plan post race rain rank real ride ring road roll root
rush salt sand save seat seed ship shop sign site slow snow soar song spot star stay stop sure task team tell
text tide time tour town toys trip true turn vine wave wear west wind wolf yelp cars
""".split())

# Names whose listed spelling is not how the news writes them.
_DISPLAY_FIXES = {
    "EBay": "eBay", "EPlus": "ePlus", "EasyJet": "easyJet", "IndustrivärdenC": "Industrivärden",
    "KalmarB": "Kalmar", "LifcoB": "Lifco", "arGEN-X": "argenx", "Orpea-Gruppe": "Orpea",
}

# Short names the news uses for listed companies that no listed name yields (alias -> listed name).
_EXTRA_ALIASES = {
    "Lloyds": "Lloyds Banking Group", "Lloyds Bank": "Lloyds Banking Group", "Goldman": "Goldman Sachs",
    "Berkshire": "Berkshire Hathaway", "Exxon": "ExxonMobil", "Volkswagen": "Volkswagen Group",
    "VW": "Volkswagen Group", "Mercedes": "Mercedes-Benz Group", "Sainsbury": "Sainsbury's",
    "Meta": "Meta Platforms", "Tesla Motors": "Tesla", "Marks and Spencer": "Marks & Spencer", "M&S": "Marks & Spencer",
}

# Multi-word names that are places, institutions or events, not companies.
_STOP_PHRASES = """
new york|new jersey|new zealand|new delhi|new mexico|hong kong|south korea|north korea|south africa|
saudi arabia|united states|united kingdom|united nations|european union|european commission|
european parliament|european central bank|bank of england|bank of japan|bank of canada|reserve bank|
federal reserve|people's bank of china|white house|downing street|wall street|silicon valley|middle east|
los angeles|san francisco|san diego|las vegas|sri lanka|el salvador|costa rica|puerto rico|rhode island|
world health organization|world bank|supreme court|high court|prime minister|home office|foreign office|
house of commons|house of lords|treasury department|justice department|department of justice|
state department|premier league|champions league|world cup|black friday|cyber monday|new year|
good friday|boxing day|earth day|super tuesday|grand prix|formula one|six nations|the guardian|
the observer|associated press|the times|dow jones|nasdaq composite|financial times|wall street journal|
office for national statistics|fed chair|new year's day|covid-19
"""


@lru_cache(maxsize=1)
def _lists() -> dict[str, frozenset[str]]:
    def words(text: str) -> frozenset[str]:
        return frozenset(text.split())

    return {
        "function": words(_FUNCTION_WORDS), "number": words(_NUMBER_WORDS), "time": words(_TIME_WORDS),
        "role": words(_ROLE_WORDS), "junk": words(_JUNK_WORDS), "place": words(_PLACE_WORDS),
        "generic": words(_GENERIC_WORDS), "connector": words(_CONNECTORS),
        "corporate": words(_CORPORATE_SUFFIXES), "strong_tail": words(_STRONG_TAILS),
        "descriptor": words(_DESCRIPTORS), "acronym_tail": words(_ACRONYM_TAIL_WORDS),
        "acronym": words(_COMMON_ACRONYMS), "first_name": words(_FIRST_NAMES),
        "phrases": frozenset(p.strip() for p in _STOP_PHRASES.split("|") if p.strip()),
    }


def stop_words() -> dict[str, frozenset[str]]:
    """The stop and helper lists, for inspection and tests.

    :returns: ``{"function", "number", "time", "role", "junk", "place", "generic", "connector",
        "corporate", "strong_tail", "descriptor", "acronym_tail", "acronym", "phrases"}`` -> words, in lower
        case except ``acronym`` (upper case); ``phrases`` holds lower-case multi-word names.
    """
    return dict(_lists())


# --- tokens ------------------------------------------------------------------------------------------

# (text before the token, token): a token is letters/digits with inner joiners (J.P, AT&T, Rolls-Royce,
# McDonald's, K+S), or a lone "&".
_PAIR_RE = re.compile(r"((?:[^\w&]|_)*)([^\W_](?:[\w.'&+\-]*[^\W_])?|&)")
_TOKEN_RE = re.compile(r"[^\W_](?:[\w.'&+\-]*[^\W_])?|&")
_TAG_RE = re.compile(r"<[^>]*>")
_TRANSLATE = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "–": "-", "‑": "-", "\u00a0": " "})
_ABBREVIATIONS = frozenset("inc corp co ltd mr mrs ms dr st jr sr vs no prof gen gov sen rep bros plc".split())
_SENTENCE_MARKS = frozenset(".:;!?|\"—")
_ARTICLES = frozenset({"The", "A", "An"})

# token classes (bit flags)
_FUNC, _NUM, _TIME, _ROLE, _JUNK, _PLACE, _GENERIC, _ACRO, _CONN, _CORP, _DIGIT, _FIRST = (1 << i for i in range(12))
_SPLIT_SENTENCE = _FUNC | _TIME | _ROLE | _DIGIT
_SPLIT_TITLE = _SPLIT_SENTENCE | _JUNK
_STOPPISH = _FUNC | _NUM | _TIME | _ROLE | _JUNK | _PLACE | _GENERIC | _ACRO | _CORP | _DIGIT


def _normalize_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).translate(_TRANSLATE)


def _strip_possessive(token: str) -> str:
    if "'" not in token:
        return token
    if token.endswith(("'s", "'S")):
        return token[:-2]
    return token[:-1] if token.endswith("'") else token


def _is_acronym(token: str) -> bool:
    """2-6 characters, upper-case letters (dots and ``&`` allowed inside: ``S&P``, ``U.S``), 2-5 letters."""
    if not 2 <= len(token) <= 6 or not token.isupper():
        return False
    return 2 <= sum(ch.isalpha() for ch in token) <= 5 and all(ch.isalpha() or ch in ".&" for ch in token)


def _undot(token: str) -> str:
    """``U.S`` -> ``US``; ``J.P`` -> ``JP``; other tokens unchanged."""
    if "." in token and all(len(part) <= 1 for part in token.split(".")):
        return token.replace(".", "")
    return token


_CLASS_CACHE: dict[str, int] = {}
_CLASS_KEYS = (("function", _FUNC), ("number", _NUM), ("time", _TIME), ("role", _ROLE), ("junk", _JUNK),
               ("place", _PLACE), ("generic", _GENERIC), ("connector", _CONN), ("corporate", _CORP),
               ("first_name", _FIRST))


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
    for key, flag in _CLASS_KEYS:
        if low in lists[key]:
            flags |= flag
    upper = token.upper()
    if upper in lists["acronym"] or _undot(upper) in lists["acronym"]:
        flags |= _ACRO            # "CEO", also as the Guardian writes some: "Nato", "Uefa", "Covid"
    if (len(token) >= 3 and token.endswith("s") and token[:-1].isupper() and token[:-1].isalpha()):
        flags |= _JUNK            # plural acronyms ("MPs", "ETFs", "SPACs") are things, not names
    if not flags and "-" in token:   # "US-China", "Trump-era", "Flood-hit": junk if a part is listed
        for part in token.split("-"):
            if part and _token_class(part) & (_STOPPISH & ~_CORP):
                flags |= _JUNK
                break
    if len(_CLASS_CACHE) < 100_000:
        _CLASS_CACHE[token] = flags
    return flags


@dataclass(frozen=True, slots=True)
class _Tokens:
    text: list[str]        # tokens as written (quotes normalised)
    base: list[str]        # possessive stripped
    hard: list[bool]       # punctuation before the token (runs and aliases do not cross it)
    initial: list[bool]    # first word of a sentence or clause
    gaps: list[str]        # the text between the previous token and this one


def _tokenize(text: str) -> _Tokens:
    texts: list[str] = []
    bases: list[str] = []
    hard: list[bool] = []
    initial: list[bool] = []
    gaps: list[str] = []
    prev = ""
    prev_initial = True
    for gap, tok in _PAIR_RE.findall(text):
        if not texts:
            is_hard, is_initial = True, True
        elif not gap or gap.isspace():
            is_hard, is_initial = False, prev_initial and prev in _ARTICLES    # "The Papers: ..."
        else:
            stripped = gap.strip()
            if stripped == "$":
                is_hard, is_initial = False, False
            elif stripped == "." and (prev.lower() in _ABBREVIATIONS or "." in prev or len(prev) == 1):
                is_hard, is_initial = False, False       # "J.P. Morgan", "Apple Inc. said"
            else:
                is_hard = True
                is_initial = (any(ch in _SENTENCE_MARKS for ch in stripped) or stripped in ("-", "'")
                              or stripped.endswith("'"))
        texts.append(tok)
        bases.append(_strip_possessive(tok) or tok)
        hard.append(is_hard)
        initial.append(is_initial)
        gaps.append(gap)
        prev = tok
        prev_initial = is_initial
    return _Tokens(texts, bases, hard, initial, gaps)


def _alias_tokens(name: str) -> tuple[str, ...]:
    return tuple(_TOKEN_RE.findall(_normalize_text(name)))


# --- the case of a headline ---------------------------------------------------------------------------

_MINOR_WORDS = frozenset(
    "a an the and or nor but of in on at to for by with from as vs via per into onto over up off out".split()
)


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
        elif first.isupper():
            n_cap += 1
        elif tok not in _MINOR_WORDS:
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
    :param aliases: the aliases that resolve to it, as token sequences joined by spaces
        (``("Apple", "Apple Inc", "AAPL")``).
    :param weak: the aliases among them that are weak (matched only mid-sentence in sentence case).
    :param tickers: its US ticker symbols (also those too ambiguous to be aliases).
    :param source: ``"pytickersymbols"``, ``"companies.json"`` or both joined by ``+``.
    """

    name: str
    aliases: tuple[str, ...]
    weak: tuple[str, ...]
    tickers: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class _Table:
    index: dict[tuple[str, ...], tuple[str, bool, bool]]   # alias tokens -> (canonical, weak, ticker)
    folded: dict[tuple[str, ...], str]                 # case-folded alias tokens -> canonical (names only)
    max_len: dict[str, int]                             # first token (as written and folded) -> longest alias
    companies: dict[str, KnownCompany]


_PAREN_RE = re.compile(r"\s*\([^)]*\)")
_SHARE_CLASS_RE = re.compile(r"\s+Class\s+[A-Z]\b.*$")
_PLAIN_TICKER_RE = re.compile(r"[A-Z]{1,5}(?:\.[A-C])?")      # BRK.B, not LLOY.L (London) nor SAP.F


def _clean_listed_name(name: str) -> str:
    name = _normalize_text(name)
    name = _PAREN_RE.sub("", name)
    name = _SHARE_CLASS_RE.sub("", name)
    return " ".join(name.split()).strip(" ,")


def _is_suffix(word: str, suffixes: frozenset[str]) -> bool:
    low = word.lower().rstrip(".,")
    return low in suffixes or low.replace(".", "") in suffixes


def _strip_suffixes(name: str, suffixes: frozenset[str]) -> list[str]:
    """Progressively shorter forms without the given trailing words: ``"HSBC Holdings plc"`` ->
    ``["HSBC Holdings", "HSBC"]``; a leading ``The`` goes too."""
    out: list[str] = []
    words = name.replace(",", " ").split()
    if len(words) > 1 and words[0].lower() == "the":
        words = words[1:]
        out.append(" ".join(words))
    while len(words) > 1 and _is_suffix(words[-1], suffixes):
        words = words[:-1]
        while len(words) > 1 and words[-1] in {"&", "and"}:
            words = words[:-1]
        out.append(" ".join(words))
    return out


def _canonical_of_listed(name: str) -> str:
    """The canonical name of a listed company: the name without legal-form suffixes (not ``Group``),
    unless that leaves an ordinary word (``"Southern Company"`` and ``"Next plc"`` stay)."""
    name = _DISPLAY_FIXES.get(name, name)
    legal = _lists()["corporate"] - {"group", "holdings", "holding", "companies"}
    words = name.replace(",", " ").split()
    if len(words) > 1 and words[0].lower() == "the":
        words = words[1:]
    while len(words) > 1 and _is_suffix(words[-1], legal):
        shorter = words[:-1]
        while len(shorter) > 1 and shorter[-1] in {"&", "and"}:
            shorter = shorter[:-1]
        if len(shorter) == 1 and (_token_class(shorter[0]) & _STOPPISH or shorter[0].lower() in WEAK_NAMES):
            break
        words = shorter
    return " ".join(words)


def _ascii_fold(name: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch))


def _us_tickers(record: Mapping[str, Any]) -> list[str]:
    """US ticker symbols of a listed company: its primary symbol when plain (``AAPL``, ``BRK.B``),
    else its NYSE/NASDAQ listings (the ADRs of a European company)."""
    symbol = record.get("symbol")
    if isinstance(symbol, str) and _PLAIN_TICKER_RE.fullmatch(symbol):
        return [symbol]
    out: list[str] = []
    for listing in record.get("symbols") or ():
        google = listing.get("google") if isinstance(listing, Mapping) else None
        if isinstance(google, str) and google.startswith(("NYSE:", "NASDAQ:")):
            sym = google.split(":", 1)[1].replace("-", ".")
            if _PLAIN_TICKER_RE.fullmatch(sym) and sym not in out:
                out.append(sym)
    return out


def _ticker_usable(sym: str) -> bool:
    letters = sym.replace(".", "")
    if not letters.isalpha() or len(letters) < 2:
        return False
    if len(letters) == 2:
        return False        # GM (genetically modified), GE (general election), MS, PM, IT: too ambiguous
    low = sym.lower()
    if low in _TICKER_WORDS or low in WEAK_NAMES:
        return False
    return not _token_class(sym) & _STOPPISH


def _listed_records() -> Iterator[Mapping[str, Any]]:
    try:
        data = import_module("pytickersymbols.indices_data")
    except ImportError:
        logger.warning("pytickersymbols is not installed: only the names of models/companies.json are known")
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
    from finpulse.models.tickers import COMPANIES_FILE  # the bundled name -> ticker list

    raw = json.loads(COMPANIES_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in raw.items() if not k.startswith("_") and isinstance(v, str)}


# alias strengths (the lower wins a collision)
_P_NAME, _P_BUNDLED, _P_DERIVED, _P_TICKER = 0, 1, 2, 3


def _weak_alias(toks: tuple[str, ...], strength: int) -> bool | None:
    """Whether an alias is weak (an ordinary word), or ``None`` when it is not to be used at all."""
    if len(toks) == 1:
        tok = toks[0]
        if len(tok) < 2:
            return None
        flags = _token_class(_strip_possessive(tok))
        if tok.isupper():
            if strength == _P_TICKER:
                return False
            if flags & _ACRO or (strength >= _P_DERIVED and flags & _STOPPISH):
                return None         # "CEO" no; "Q2" from "Q2 Holdings", "SCREEN" from "SCREEN Holdings" no
            return bool(flags & _STOPPISH)      # "HP", "BT" yes
        if flags & (_STOPPISH | _CONN):
            return None if strength >= _P_DERIVED else True   # "News" from "News Corp": no; "Target": weak
        return tok.lower() in WEAK_NAMES
    # several words: weak when every word is an ordinary headline word ("Best Buy"); generic or place words
    # make a specific name together ("Bank of America", "General Motors"), and so do surnames
    words = [t for t in toks if t != "&" and not _token_class(t) & (_CONN | _CORP)]
    return bool(words) and all(_token_class(_strip_possessive(t)) & (_FUNC | _JUNK | _TIME | _NUM | _ROLE)
                               for t in words)


@lru_cache(maxsize=1)
def _table() -> _Table:
    lists = _lists()
    aliases: dict[str, dict[str, int]] = {}          # canonical -> {alias: strength}
    tickers: dict[str, list[str]] = {}
    sources: dict[str, set[str]] = {}

    def add(canon: str, alias: str, strength: int) -> None:
        alias = " ".join(_normalize_text(alias).split())
        if alias:
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
        shown = _DISPLAY_FIXES.get(listed, listed)
        for form in _strip_suffixes(shown, lists["corporate"]):
            add(canon, form, _P_DERIVED)
        for form in _strip_suffixes(shown, lists["descriptor"]):
            add(canon, form, _P_DERIVED)
        for sym in _us_tickers(record):
            if sym not in tickers.setdefault(canon, []):
                tickers[canon].append(sym)

    owners_of: dict[str, set[str]] = {}
    for canon, syms in tickers.items():
        for sym in syms:
            owners_of.setdefault(sym, set()).add(canon)

    bundled_first: dict[str, str] = {}
    for name, sym in _bundled_names().items():
        ticker_owners = owners_of.get(sym, set())
        if len(ticker_owners) == 1:
            canon = next(iter(ticker_owners))
        else:
            canon = bundled_first.setdefault(sym, name)      # the file's first name for the ticker
            if sym not in tickers.setdefault(canon, []):
                tickers[canon].append(sym)
        sources.setdefault(canon, set()).add("companies.json")
        add(canon, name, _P_BUNDLED)
    owner_of_alias = {a: c for c, entry in aliases.items() for a in entry}
    for alias, target in _EXTRA_ALIASES.items():
        target_canon = target if target in aliases else owner_of_alias.get(target)
        if target_canon is not None:
            add(target_canon, alias, _P_BUNDLED)

    for canon in list(aliases):
        for alias in list(aliases[canon]):
            ascii_form = _ascii_fold(alias)
            if ascii_form != alias:
                add(canon, ascii_form, _P_DERIVED)
        for sym in tickers.get(canon, ()):
            if _ticker_usable(sym):
                add(canon, sym, _P_TICKER)

    # collisions: the strongest claim wins; a tie between two companies drops the alias
    claims: dict[tuple[str, ...], dict[str, int]] = {}
    for canon, entry in aliases.items():
        for alias, strength in entry.items():
            toks = _alias_tokens(alias)
            if toks:
                claimants = claims.setdefault(toks, {})
                claimants[canon] = min(strength, claimants.get(canon, strength))
    index: dict[tuple[str, ...], tuple[str, bool, bool]] = {}
    kept: dict[str, list[tuple[str, bool]]] = {c: [] for c in aliases}
    folded_claims: dict[tuple[str, ...], set[str]] = {}
    for toks, claimants in claims.items():
        best = min(claimants.values())
        winners = [c for c, s in claimants.items() if s == best]
        if len(winners) != 1:
            continue
        canon = winners[0]
        weak = _weak_alias(toks, best)
        if weak is None:
            continue
        index[toks] = (canon, weak, best == _P_TICKER)
        kept[canon].append((" ".join(toks), weak))
        if not weak and best != _P_TICKER and (len(toks) > 1 or len(toks[0]) >= 4):
            folded_claims.setdefault(tuple(t.casefold() for t in toks), set()).add(canon)
    folded_index = {k: next(iter(v)) for k, v in folded_claims.items() if len(v) == 1}
    max_len: dict[str, int] = {}
    for toks in list(index) + list(folded_index):
        max_len[toks[0]] = max(max_len.get(toks[0], 0), len(toks))
    companies = {
        canon: KnownCompany(
            name=canon,
            aliases=tuple(a for a, _ in kept[canon]),
            weak=tuple(a for a, w in kept[canon] if w),
            tickers=tuple(tickers.get(canon, ())),
            source="+".join(sorted(sources.get(canon, set()))),
        )
        for canon in sorted(aliases)
    }
    return _Table(index=index, folded=folded_index, max_len=max_len, companies=companies)


def known_companies() -> dict[str, KnownCompany]:
    """The known companies, by canonical name (built on first use, then cached).

    :returns: ``{"Apple": KnownCompany(name="Apple", aliases=("Apple", "Apple Inc", "AAPL"), ...), ...}``.
    """
    return dict(_table().companies)


def canonical(name: str) -> str | None:
    """Resolve an alias to its company's canonical name.

    :param name: a company name, alias or ticker: ``"Apple Inc."``, ``"Apple"``, ``"AAPL"``, ``"$AAPL"``,
        ``"HSBC Holdings plc"``; exact case first, then case-insensitively (names, not tickers), then
        without legal or holding suffixes.
    :returns: the canonical name (``"Apple"``), or ``None`` for a name that is not known.
    """
    if not isinstance(name, str):
        return None
    table = _table()
    forms = [name, *_strip_suffixes(_normalize_text(name), _lists()["corporate"])]
    for form in forms:
        toks = _alias_tokens(form)
        if not toks:
            continue
        last = _strip_possessive(toks[-1])
        for key in (toks, toks[:-1] + (last,)):
            hit = table.index.get(key)
            if hit is not None:
                return hit[0]
        for key in (toks, toks[:-1] + (last,)):
            folded = table.folded.get(tuple(t.casefold() for t in key))
            if folded is not None:
                return folded
    return None


# --- matching -------------------------------------------------------------------------------------------

def _capitalised_name_word(tokens: _Tokens, k: int) -> bool:
    """Whether token ``k`` is a capitalised word that may belong to a longer name (``"Bill"`` of
    ``"Bill Gates"``): not a function, time or number word nor an acronym."""
    tok = tokens.base[k]
    return tok[0].isupper() and not tok.isupper() and not _token_class(tok) & (_FUNC | _TIME | _NUM | _DIGIT)


_CONTEXT_WORDS = frozenset("""
share shares stock stocks profit profits sales revenue revenues results earnings investors shareholders chief
ceo boss bosses executive executives chairman retailer retailers maker makers firm firms company companies
group owner owners deal deals bid bids takeover merger buys bought sells acquire acquires acquired acquisition
stake brand brands chain store stores lender insurer carmaker airline supplier giant rival rivals inc corp plc
ltd listed nyse nasdaq ftse dividend guidance outlook forecast quarter quarterly analysts analyst upgrade
upgrades downgrade downgrades valuation ipo layoffs employees factory plant plants operator
""".split())


def _company_context(tokens: _Tokens, start: int, end: int) -> bool:
    """Whether a word near ``[start, end)`` says it is about a company ("shares", "retailer", "CEO")."""
    near = tokens.base[max(0, start - 3):start] + tokens.base[end:end + 3]
    return any(t.lower() in _CONTEXT_WORDS for t in near)


def _is_ticker(token: str) -> bool:
    hit = _table().index.get((token,))
    return hit is not None and hit[2]


def _ticker_context(tokens: _Tokens, i: int) -> bool:
    """Whether an upper-case token that is some company's ticker is used as one: ``$AAPL``, ``(AAPL)``,
    ``NYSE:AAPL``, a symbol of 4+ letters, or a company word nearby ("shares", "stock", ...)."""
    gap = tokens.gaps[i]
    return (any(ch in gap for ch in "$(:") or len(tokens.text[i].replace(".", "")) >= 4
            or _company_context(tokens, i, i + 1))


def _match_known(tokens: _Tokens, mode: str, table: _Table) -> list[tuple[int, int, str]]:
    """Known-company matches ``(start, end, canonical)``, longest first, left to right."""
    out: list[tuple[int, int, str]] = []
    text, base, hard, initial = tokens.text, tokens.base, tokens.hard, tokens.initial
    index, folded_index, max_len = table.index, table.folded, table.max_len
    n = len(text)
    i = 0
    while i < n:
        tok = text[i]
        longest = max_len.get(tok) or max_len.get(base[i])
        cased = tok[0].isupper()
        if not longest and cased:
            longest = max_len.get(base[i].casefold())
        if not longest:
            i += 1
            continue
        found = None
        for length in range(min(longest, n - i), 0, -1):
            j = i + length
            if length > 1 and (any(hard[i + 1:j]) or any(text[k] != base[k] for k in range(i, j - 1))):
                continue
            key = tuple(text[i:j])
            hit = index.get(key)
            if hit is None and base[j - 1] != text[j - 1]:
                key = key[:-1] + (base[j - 1],)
                hit = index.get(key)
            if hit is None and cased and all(t[0].isupper() or t in ("&", "of", "and") for t in key):
                if length > 1 or mode != "caps":
                    canon_f = folded_index.get(tuple(t.casefold() for t in key))
                    hit = (canon_f, False, False) if canon_f is not None else None
            if hit is None:
                continue
            canon, weak, ticker = hit
            if ticker and not _ticker_context(tokens, i):
                continue            # "MPC" (Monetary Policy Committee) is not Marathon Petroleum
            if length == 1:
                if mode == "caps" or text[i] != base[i] and text[i].isupper():
                    continue        # no single words in ALL CAPS; no possessive tickers ("AAP's")
                if i > 0 and not hard[i] and _token_class(base[i - 1]) & _FIRST:
                    continue        # "Andrew Marvell", "Serena Williams"
            if weak:
                if mode != "sentence" or initial[i]:
                    continue
                if i > 0 and not hard[i] and _capitalised_name_word(tokens, i - 1):
                    continue        # "Bill Gates", "Diane Abbott"
                if j < n and not hard[j] and (_capitalised_name_word(tokens, j) or base[j] in ("of", "&")):
                    continue        # "Match of the Day", "Gates Foundation"
                if not _company_context(tokens, i, j):
                    continue        # "the ascent of Everest", "partying on Zoom"
            found = (i, j, canon)
            break
        if found is None:
            i += 1
        else:
            out.append(found)
            i = found[1]
    return out


# --- candidates ----------------------------------------------------------------------------------------

def candidate_key(name: str) -> str | None:
    """Normalise a candidate name to its key.

    :param name: e.g. ``"China  Evergrande Group's"``, ``"SVB Financial Group"``, ``"U.S."``.
    :returns: ``"China Evergrande"``, ``"SVB"``, ``"US"``: tokens joined by one space, possessive and
        punctuation stripped, legal/holding suffixes and a leading ``The`` dropped, an acronym followed
        only by corporate words reduced to the acronym; ``None`` when nothing is left.
    """
    return _key([_undot(_strip_possessive(t)) for t in _alias_tokens(name)])


def _key(toks: list[str]) -> str | None:
    lists = _lists()
    toks = [t for t in toks if t]
    while toks and (toks[0].lower() == "the" or toks[0] == "&" or toks[0].lower() in lists["connector"]):
        toks = toks[1:]
    while len(toks) > 1 and (_is_suffix(toks[-1], lists["corporate"]) or toks[-1] in ("&", "and")
                             or toks[-1].lower() in lists["connector"]):
        toks = toks[:-1]
    if len(toks) > 1 and _is_acronym(toks[0]) and all(t.lower() in lists["acronym_tail"] for t in toks[1:]):
        toks = toks[:1]
    return " ".join(toks) or None


def _initials(toks: Iterable[str]) -> str:
    skip = _lists()["connector"] | {"the", "and"}
    return "".join(t if _is_acronym(t) else t[0] for t in toks if t.lower() not in skip).upper()


@dataclass(frozen=True, slots=True)
class Entities:
    """The entities of one article.

    :param known: canonical names of the known companies mentioned, in order of first mention.
    :param candidates: keys of the other names (emerging entities), in order of first mention.
    :param expansions: ``(acronym, expanded key)`` pairs seen in the article, e.g.
        ``(("SVB", "Silicon Valley Bank"),)``; such an acronym is reported under its expansion.
    """

    known: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    expansions: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The known names, then the candidates."""
        return self.known + self.candidates


@dataclass(frozen=True, slots=True)
class _Found:
    key: str
    words: tuple[str, ...]
    start: int          # token index in its segment
    end: int            # exclusive
    acronym: bool


def _runs(tokens: _Tokens, covered: list[bool], mode: str) -> Iterator[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of capitalised tokens (connectors inside) that cross no break."""
    split = _SPLIT_TITLE if mode == "title" else _SPLIT_SENTENCE
    base, hard, text = tokens.base, tokens.hard, tokens.text
    start = -1
    for i in range(len(base)):
        tok = base[i]
        if covered[i]:
            ok = False
        elif start >= 0 and not hard[i] and (tok == "&" or (tok.islower() and _token_class(tok) & _CONN)):
            ok = True
        elif tok[0].isupper() and not _token_class(tok) & split:
            if start >= 0 and hard[i]:
                yield start, i
                start = -1
            ok = True
        else:
            ok = False
        if ok:
            if start < 0:
                start = i
            if text[i] != tok:          # a possessive ends the name
                yield start, i + 1
                start = -1
        elif start >= 0:
            yield start, i
            start = -1
    if start >= 0:
        yield start, len(base)


def _candidates_in(tokens: _Tokens, mode: str, covered: list[bool]) -> list[_Found]:
    out: list[_Found] = []
    lists = _lists()
    base = tokens.base
    title = mode == "title"
    for start, end in _runs(tokens, covered, mode):
        # edges: connectors, legal words and role acronyms ("PM Liz Truss") go; headline words ("Shares")
        # go at the start of a sentence and in Title Case, but not mid-sentence ("World Economic Forum")
        while start < end:
            flags = _token_class(base[start])
            if (base[start] == "&" or flags & (_CONN | _CORP) or flags & _ACRO and end - start > 1
                    or flags & _JUNK and (title or tokens.initial[start])):
                start += 1
            else:
                break
        while end > start and (base[end - 1] == "&" or _token_class(base[end - 1]) & (_CONN | (_JUNK if title else 0))):
            end -= 1
        if start >= end:
            continue
        words = tuple(_undot(t) for t in base[start:end])
        if end - start == 1:
            word = words[0]
            flags = _token_class(base[start]) | _token_class(word)
            if _is_acronym(base[start]):
                if not flags & _STOPPISH:
                    out.append(_Found(word, words, start, end, True))
                continue
            if (mode != "sentence" or len(word) < 2 or flags & (_STOPPISH | _FIRST) or word.lower() in WEAK_NAMES
                    or tokens.initial[start] or not word[0].isupper()):
                continue
            out.append(_Found(word, words, start, end, False))
            continue
        flags_list = [_token_class(t) for t in base[start:end]]
        name_flags = [f for t, f in zip(words, flags_list, strict=True) if not f & (_CONN | _CORP) and t != "&"]
        if not any(not f & _STOPPISH for f in name_flags):
            continue            # "UK Government", "Six Nations", "National Bank"
        if title:       # Title Case: only names that end like a company ("... Bank", "... Capital")
            tails = [k for k in range(1, len(words)) if words[k].lower() in lists["strong_tail"]]
            if not tails:
                continue
            end = start + tails[-1] + 1         # "Evergrande Group Defaults" -> "Evergrande Group"
            words = words[:tails[-1] + 1]
            name_flags = [_token_class(t) for t in words if not _token_class(t) & (_CONN | _CORP) and t != "&"]
            if not any(not f & _STOPPISH for f in name_flags):
                continue
        if " ".join(words).lower() in lists["phrases"]:
            continue
        key = _key(list(words))
        if not key or key.lower() in lists["phrases"]:
            continue
        if " " not in key and not _is_acronym(key) and _token_class(key) & _STOPPISH:
            continue
        out.append(_Found(key, words, start, end, _is_acronym(key)))
    return out


def _segments(title: str, summary: str | None) -> list[str]:
    out = [_normalize_text(title)]
    if summary:
        text = html.unescape(_TAG_RE.sub(" | ", summary))
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
        after the tags are removed are searched), or ``None``.
    :returns: :class:`Entities`, de-duplicated and in order of first mention; the same input always gives
        the same output.
    """
    table = _table()
    known: list[str] = []
    found: list[_Found] = []
    known_initials: set[str] = set()
    pairs: dict[str, str] = {}
    for text in _segments(title if isinstance(title, str) else "",
                          summary if isinstance(summary, str) else None):
        tokens = _tokenize(text)
        if not tokens.text:
            continue
        mode = _mode(tokens)
        covered = [False] * len(tokens.text)
        for start, end, canon in _match_known(tokens, mode, table):
            if canon not in known:
                known.append(canon)
            covered[start:end] = [True] * (end - start)
            if end - start > 1:
                known_initials.add(_initials(tokens.base[start:end]))
        if mode == "caps":
            continue
        seg_found = _candidates_in(tokens, mode, covered)
        # "Silicon Valley Bank (SVB)", "SVB (Silicon Valley Bank)": adjacent, the second in parentheses
        for a, b in zip(seg_found, seg_found[1:], strict=False):
            if b.start == a.end and tokens.gaps[b.start].strip() == "(" and a.acronym != b.acronym:
                short, long = (a, b) if a.acronym else (b, a)
                if len(long.words) > 1:
                    pairs.setdefault(short.key, long.key)
        found.extend(seg_found)
    # an acronym whose expansion (matching initials) is in the article
    for f in found:
        if f.acronym and f.key not in pairs:
            for g in found:
                if not g.acronym and len(g.words) > 1 and f.key in (_initials(g.words), _initials(g.key.split())):
                    pairs[f.key] = g.key
                    break
    candidates: list[str] = []
    known_folded = {k.casefold() for k in known}
    for f in found:
        key = pairs.get(f.key, f.key)
        if f.acronym and f.key not in pairs and f.key in known_initials:
            continue            # "Bank of America (BOA)": the acronym of a known name
        if key.casefold() in known_folded or key in candidates:
            continue
        if f.acronym and f.key not in pairs and _is_ticker(f.key):
            continue            # "AAP" used as no symbol: a known company's ticker, not an emerging name
        candidates.append(key)
    expansions = tuple((a, e) for a, e in pairs.items() if e in candidates)
    return Entities(known=tuple(known), candidates=tuple(candidates), expansions=expansions)
