"""Standard export formats (EXP-1): SAS XPORT v5 datasets with their define-style listing, and
the CDISC ODM 1.3.2 document checked against its XSD.

Pure writers: the service layer decides what goes in (and what blinding keeps out, RAND-6);
nothing here reads the database or the allocation key.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from trialdesk.reports.csv_cells import write_csv

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,7}$")
XPT_MAX_CHARS = 200


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    type: Literal["Char", "Num"] = "Char"
    comment: str = ""
    # Define-XML metadata (issue 16): role, core (Req/Exp/Perm), origin type, the codelist
    # OID in reports/define.py, the derivation method's text; length comes from the data
    role: str = ""
    core: str = ""
    origin: str = ""
    codelist: str = ""
    method: str = ""


@dataclass
class Dataset:
    """One SDTM domain: variables in SDTMIG order, rows keyed by variable name."""

    name: str
    label: str
    variables: list[Variable]
    rows: list[dict[str, object]] = field(default_factory=list)
    comment: str = ""
    # Define-XML metadata (issue 16): the observation class, the structure, the key variables
    klass: str = ""
    structure: str = ""
    keys: tuple[str, ...] = ()
    standard: str = "SDTMIG"
    supp: list[dict[str, object]] = field(default_factory=list)
    """Supplemental qualifiers of this domain's records (written as SUPP--)."""


def check_dataset(ds: Dataset) -> None:
    """XPORT v5 limits, checked before anything is written: names of at most 8 characters
    (letters, digits, underscore), labels of at most 40, text values of at most 200."""
    problems: list[str] = []
    if not NAME_RE.match(ds.name):
        problems.append(f"dataset name {ds.name!r} is not a SAS v5 name (8 characters at most)")
    if len(ds.label) > 40:
        problems.append(f"dataset label of {ds.name} is longer than 40 characters")
    seen: set[str] = set()
    for var in ds.variables:
        if not NAME_RE.match(var.name):
            problems.append(f"{ds.name}.{var.name}: not a SAS v5 name (8 characters at most)")
        if len(var.label) > 40:
            problems.append(f"{ds.name}.{var.name}: label longer than 40 characters")
        if var.name in seen:
            problems.append(f"{ds.name}.{var.name}: duplicate variable")
        seen.add(var.name)
    for row in ds.rows:
        extra = set(row) - seen
        if extra:
            problems.append(f"{ds.name}: values for unknown variables {sorted(extra)}")
        for var in ds.variables:
            value = row.get(var.name)
            if var.type == "Char" and isinstance(value, str) and len(value) > XPT_MAX_CHARS:
                problems.append(f"{ds.name}.{var.name}: value longer than {XPT_MAX_CHARS}")
    if problems:
        raise ValueError("; ".join(sorted(set(problems))))


def write_xpt(ds: Dataset, path: Path) -> None:
    """Write one dataset as SAS XPORT version 5 (after :func:`check_dataset`)."""
    import pandas as pd
    import pyreadstat

    check_dataset(ds)
    columns: dict[str, list[object]] = {}
    for var in ds.variables:
        values = [row.get(var.name) for row in ds.rows]
        if var.type == "Num":
            columns[var.name] = [float(v) if v is not None else None for v in values]  # type: ignore[arg-type]
        else:
            columns[var.name] = ["" if v is None else str(v) for v in values]
    _widen_short_records(ds, columns)
    frame = pd.DataFrame(columns, columns=[v.name for v in ds.variables])
    pyreadstat.write_xport(
        frame,
        str(path),
        file_format_version=5,
        table_name=ds.name,
        file_label=ds.label,
        column_labels=[v.label for v in ds.variables],
    )


def _widen_short_records(ds: Dataset, columns: dict[str, list[object]]) -> None:
    """Give records of 80 bytes or fewer trailing blanks up to 81 bytes.

    pandas.read_sas counts observations of such short records by the blank 8-byte words in
    the file's last 80-byte card, and so drops rows whose values end in blanks. XPORT pads
    character values with blanks anyway and every reader strips them, so no value changes.
    """
    chars = [v.name for v in ds.variables if v.type == "Char"]
    if not ds.rows or not chars:
        return
    width = sum(8 if v.type == "Num" else _width(columns[v.name]) for v in ds.variables)
    if width <= 80:
        column = columns[chars[0]]
        first = str(column[0])
        wanted = _width(column) + 81 - width
        column[0] = first + " " * (wanted - len(first.encode("utf-8")))


def _width(values: list[object]) -> int:
    return max([1] + [len(str(x).encode("utf-8")) for x in values])


def write_define(datasets: Sequence[Dataset], path: Path) -> None:
    """A define-style listing: one line per variable, in dataset order."""
    rows: list[list[object]] = []
    for ds in datasets:
        rows.append([ds.name, ds.label, "", "", "", "", ds.comment])
        for order, var in enumerate(ds.variables, start=1):
            rows.append([ds.name, ds.label, order, var.name, var.label, var.type, var.comment])
    header = ["dataset", "dataset_label", "order", "variable", "label", "type", "comment"]
    write_csv(path, header, rows)


# --------------------------------------------------------------------------- ODM


def odm(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, odm(tag), {k: v for k, v in attrs.items()})


def translated(parent: ET.Element, tag: str, text: str) -> ET.Element:
    holder = sub(parent, tag)
    item = sub(holder, "TranslatedText")
    item.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    item.text = text
    return holder


def odm_bytes(root: ET.Element) -> bytes:
    ET.register_namespace("", ODM_NS)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def odm_schema_path() -> Path:
    import odmlib

    return Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"


@lru_cache(maxsize=1)
def _schema() -> object:
    import xmlschema

    return xmlschema.XMLSchema(str(odm_schema_path()))


def odm_problems(document: bytes) -> list[str]:
    """Every violation of the ODM 1.3.2 XSD in ``document``; empty when it validates."""
    import xmlschema

    schema = _schema()
    assert isinstance(schema, xmlschema.XMLSchema)
    try:
        return [str(err.reason or err.message) for err in schema.iter_errors(document.decode())]
    except xmlschema.XMLSchemaException as exc:
        return [str(exc)]
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
