"""Define-XML 2.1 for the SDTM and ADaM exports (issue 16), its stylesheet-free HTML
rendering and the annotated CRF it links to. Pure: datasets and the protocol in, documents
out; :func:`define_problems` validates against the Define-XML 2.1 XSD that odmlib ships.

Metadata comes from what the system holds: each :class:`Variable` carries role, core,
origin, codelist and method; lengths are measured from the data; codelists carry their NCI
codes (CDISC Controlled Terminology; sponsor-defined lists have none); findings results get
value-level metadata by test code.
"""

from __future__ import annotations

import datetime as dt
import html
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from trialdesk.protocol.models import Protocol
from trialdesk.reports.exports import Dataset, Variable

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CT_VERSION = "2024-03-29"

# (name, NCI code of the list or "", [(value, NCI code or "", decode)])
CodeListSpec = tuple[str, str, list[tuple[str, str, str]]]
CODELISTS: dict[str, CodeListSpec] = {
    "NY": ("No Yes Response", "C66742", [("N", "C49487", "No"), ("Y", "C49488", "Yes")]),
    "SEX": (
        "Sex",
        "C66731",
        [("F", "C16576", "Female"), ("M", "C20197", "Male"), ("U", "C17998", "Unknown")],
    ),
    "AGEU": ("Age Unit", "C66781", [("YEARS", "C29848", "Years")]),
    "RACE": ("Race", "C74457", [("NOT REPORTED", "C43234", "Not reported")]),
    "ETHNIC": ("Ethnic Group", "C66790", [("NOT REPORTED", "C43234", "Not reported")]),
    "AESEV": (
        "Severity/Intensity Scale for Adverse Events",
        "C66769",
        [
            ("MILD", "C41338", "Mild"),
            ("MODERATE", "C41339", "Moderate"),
            ("SEVERE", "C41340", "Severe"),
        ],
    ),
    "AEREL": (
        "Causality (sponsor-defined)",
        "",
        [
            ("NOT RELATED", "", "Not related"),
            ("POSSIBLY RELATED", "", "Possibly related"),
            ("RELATED", "", "Related"),
        ],
    ),
    "OUT": (
        "Outcome of Event",
        "C66768",
        [
            ("FATAL", "C48275", "Fatal"),
            ("NOT RECOVERED/NOT RESOLVED", "C49494", "Not recovered/not resolved"),
            ("RECOVERED/RESOLVED", "C49498", "Recovered/resolved"),
            ("RECOVERING/RESOLVING", "C49496", "Recovering/resolving"),
            ("UNKNOWN", "C17998", "Unknown"),
        ],
    ),
    "NCOMPLT": (
        "Completion/Reason for Non-Completion",
        "C66727",
        [
            ("COMPLETED", "C25250", "Completed"),
            ("DEATH", "C28554", "Death"),
            ("LOST TO FOLLOW-UP", "C48227", "Lost to follow-up"),
            ("OTHER", "C17649", "Other"),
            ("PHYSICIAN DECISION", "C48250", "Physician decision"),
            ("SCREEN FAILURE", "C49628", "Screen failure"),
            ("WITHDRAWAL BY SUBJECT", "C49634", "Withdrawal by subject"),
            ("INFORMED CONSENT OBTAINED", "", "Informed consent obtained (PROTMLST)"),
            ("RANDOMIZED", "", "Randomized (PROTMLST)"),
        ],
    ),
    "DSCAT": (
        "Category for Disposition Event",
        "C74558",
        [
            ("DISPOSITION EVENT", "C74590", "Disposition event"),
            ("PROTOCOL MILESTONE", "C74588", "Protocol milestone"),
        ],
    ),
    "EPOCH": (
        "Epoch",
        "C99079",
        [
            ("SCREENING", "C48262", "Screening"),
            ("TREATMENT", "C101526", "Treatment"),
            ("FOLLOW-UP", "C99158", "Follow-up"),
        ],
    ),
    "IECAT": (
        "Category for Inclusion/Exclusion",
        "C66797",
        [("EXCLUSION", "C25370", "Exclusion"), ("INCLUSION", "C25532", "Inclusion")],
    ),
    "ARMNRS": (
        "Arm Null Reason",
        "C142179",
        [
            ("ASSIGNED, NOT TREATED", "", "Assigned, not treated"),
            ("NOT ASSIGNED", "", "Not assigned"),
            ("SCREEN FAILURE", "", "Screen failure"),
        ],
    ),
}
"""CDISC CT (as of :data:`CT_VERSION`) for the lists the exports use; the values written
are a subset of each list. Sponsor-defined lists and items carry no NCI code."""


@dataclass
class DefineDocument:
    """Everything a define needs, gathered once for the XML and the HTML."""

    study: str
    description: str
    protocol_name: str
    standard: str  # SDTMIG | ADaMIG
    standard_version: str
    datasets: list[Dataset]
    codelists: dict[str, CodeListSpec]
    created: str
    context: str = "Submission"
    acrf: str = ""
    comments: dict[str, str] = field(default_factory=dict)


def _length(ds: Dataset, var: Variable) -> int:
    values = [row.get(var.name) for row in ds.rows]
    if var.type == "Num":
        return 8
    return max([1] + [len(str(v).encode("utf-8")) for v in values if v is not None])


def _num_type(ds: Dataset, var: Variable) -> str:
    values = [row.get(var.name) for row in ds.rows if row.get(var.name) is not None]
    if all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in values):
        return "integer"
    return "float"


def _codelists(
    datasets: Sequence[Dataset], protocol: Protocol, *, unblinded: bool = True
) -> dict[str, CodeListSpec]:
    """The lists the datasets name: CT ones, then the study's own (arms, test codes, TS
    parameters, countries) from the protocol and the data."""
    out: dict[str, CodeListSpec] = {}
    for ds in datasets:
        for var in ds.variables:
            if not var.codelist or var.codelist in out:
                continue
            if var.codelist in CODELISTS:
                out[var.codelist] = CODELISTS[var.codelist]
            elif var.codelist == "ARMCD":
                if not unblinded:
                    continue  # the arms are not named in a blinded export
                items = [(a.code, "", a.label) for a in protocol.arms]
                items.append(("UNPLAN", "", "Unplanned Treatment"))
                out["ARMCD"] = ("Arm Code (sponsor-defined)", "", items)
            else:
                values = sorted({str(r.get(var.name)) for r in ds.rows if r.get(var.name)})
                if not values:
                    continue  # a codelist needs an item (an empty dataset names none)
                nci = {"TSPARMCD": "C66738", "COUNTRY": "C66786"}.get(var.codelist, "")
                out[var.codelist] = (f"{var.codelist} values", nci, [(v, "", v) for v in values])
    return out


def sdtm_define(
    datasets: list[Dataset],
    protocol: Protocol,
    study: str,
    *,
    unblinded: bool,
    now: dt.datetime,
) -> DefineDocument:
    return DefineDocument(
        study=study,
        description=protocol.title,
        protocol_name=f"{protocol.name} {protocol.version}",
        standard="SDTMIG",
        standard_version="3.4",
        datasets=datasets,
        codelists=_codelists(datasets, protocol, unblinded=unblinded),
        created=now.replace(microsecond=0).isoformat(),
        acrf=annotated_crf(protocol, datasets),
        comments={} if unblinded else {"blinded": "Blinded export: arm content withheld"},
    )


def adam_define(
    datasets: list[Dataset], protocol: Protocol, study: str, *, now: dt.datetime
) -> DefineDocument:
    return DefineDocument(
        study=study,
        description=protocol.title,
        protocol_name=f"{protocol.name} {protocol.version}",
        standard="ADaMIG",
        standard_version="1.3",
        datasets=datasets,
        codelists=_codelists(datasets, protocol),
        created=now.replace(microsecond=0).isoformat(),
        context="Submission",
    )


# --------------------------------------------------------------------------- XML


def _e(
    parent: ET.Element, tag: str, attrs: dict[str, str] | None = None, ns: str = ODM_NS
) -> ET.Element:
    return ET.SubElement(parent, f"{{{ns}}}{tag}", attrs or {})


def _d(parent: ET.Element, tag: str, attrs: dict[str, str] | None = None) -> ET.Element:
    return _e(parent, tag, attrs, DEF_NS)


def _text(parent: ET.Element, tag: str, text: str) -> None:
    holder = _e(parent, tag)
    t = _e(holder, "TranslatedText", {XML_LANG: "en"})
    t.text = text


def _oid(*parts: str) -> str:
    return ".".join(p.replace(" ", "_") for p in parts)


def _value_level(ds: Dataset) -> tuple[str, str, list[str]] | None:
    """(result variable, test-code variable, test codes) for findings and SUPP-- datasets."""
    names = {v.name for v in ds.variables}
    if ds.name.startswith("SUPP"):
        key, result = "QNAM", "QVAL"
    elif f"{ds.name}TESTCD" in names:
        key, result = f"{ds.name}TESTCD", f"{ds.name}ORRES"
    elif "PARAMCD" in names and "AVAL" in names:
        key, result = "PARAMCD", "AVAL"
    else:
        return None
    codes = sorted({str(r.get(key)) for r in ds.rows if r.get(key)})
    return (result, key, codes) if codes else None


def define_xml(doc: DefineDocument) -> bytes:
    """The Define-XML 2.1 document."""
    ET.register_namespace("", ODM_NS)
    ET.register_namespace("def", DEF_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.Element(
        f"{{{ODM_NS}}}ODM",
        {
            "FileType": "Snapshot",
            "FileOID": _oid("DEFINE", doc.study, doc.standard),
            "ODMVersion": "1.3.2",
            "CreationDateTime": doc.created,
            "Originator": "trialdesk",
            "SourceSystem": "trialdesk",
            f"{{{DEF_NS}}}Context": doc.context,
        },
    )
    study = _e(root, "Study", {"OID": _oid("ST", doc.study)})
    glob = _e(study, "GlobalVariables")
    _e(glob, "StudyName").text = doc.study
    _e(glob, "StudyDescription").text = doc.description
    _e(glob, "ProtocolName").text = doc.protocol_name
    mdv = _e(
        study,
        "MetaDataVersion",
        {
            "OID": _oid("MDV", doc.study, doc.standard),
            "Name": f"{doc.study} {doc.standard} {doc.standard_version}",
            f"{{{DEF_NS}}}DefineVersion": "2.1.0",
        },
    )
    standards = _d(mdv, "Standards")
    _d(
        standards,
        "Standard",
        {
            "OID": "STD.IG",
            "Name": doc.standard,
            "Type": "IG",
            "Version": doc.standard_version,
            "Status": "Final",
        },
    )
    ct_set = "SDTM" if doc.standard == "SDTMIG" else "ADaM"
    _d(
        standards,
        "Standard",
        {
            "OID": "STD.CT",
            "Name": "CDISC/NCI",
            "Type": "CT",
            "PublishingSet": ct_set,
            "Version": CT_VERSION,
            "Status": "Final",
        },
    )
    if doc.acrf:
        crf = _d(mdv, "AnnotatedCRF")
        _d(crf, "DocumentRef", {"leafID": "LF.acrf"})
    methods: dict[str, str] = {}
    comments: dict[str, str] = dict(doc.comments)
    vlm = {ds.name: _value_level(ds) for ds in doc.datasets}
    # value-level metadata and where clauses
    for ds in doc.datasets:
        spec = vlm[ds.name]
        if spec is None:
            continue
        result, key, codes = spec
        vl = _d(mdv, "ValueListDef", {"OID": _oid("VL", ds.name, result)})
        for order, code in enumerate(codes, start=1):
            ref = _e(
                vl,
                "ItemRef",
                {
                    "ItemOID": _oid("IT", ds.name, result, code),
                    "OrderNumber": str(order),
                    "Mandatory": "No",
                },
            )
            _d(ref, "WhereClauseRef", {"WhereClauseOID": _oid("WC", ds.name, key, code)})
    for ds in doc.datasets:
        spec = vlm[ds.name]
        if spec is None:
            continue
        result, key, codes = spec
        for code in codes:
            wc = _d(mdv, "WhereClauseDef", {"OID": _oid("WC", ds.name, key, code)})
            check = _e(
                wc,
                "RangeCheck",
                {
                    "SoftHard": "Soft",
                    "Comparator": "EQ",
                    f"{{{DEF_NS}}}ItemOID": _oid("IT", ds.name, key),
                },
            )
            _e(check, "CheckValue").text = code
    for ds in doc.datasets:
        ig = _e(
            mdv,
            "ItemGroupDef",
            {
                "OID": _oid("IG", ds.name),
                "Name": ds.name,
                "Repeating": _yes(
                    ds.structure.lower().startswith("one record per subject") is False
                ),
                "IsReferenceData": _yes(ds.klass == "TRIAL DESIGN"),
                "SASDatasetName": ds.name,
                "Purpose": "Tabulation" if doc.standard == "SDTMIG" else "Analysis",
                f"{{{DEF_NS}}}Structure": ds.structure or "One record per record",
                f"{{{DEF_NS}}}StandardOID": "STD.IG",
                f"{{{DEF_NS}}}ArchiveLocationID": _oid("LF", ds.name),
            },
        )
        if not ds.name.startswith("AD") and not ds.name.startswith("SUPP"):
            ig.set("Domain", ds.name[:2])
        if ds.name.startswith("SUPP"):
            ig.set("Domain", ds.name)
        if ds.comment:
            comments[_oid("COM", ds.name)] = ds.comment
            ig.set(f"{{{DEF_NS}}}CommentOID", _oid("COM", ds.name))
        _text(ig, "Description", ds.label)
        for order, var in enumerate(ds.variables, start=1):
            attrs = {
                "ItemOID": _oid("IT", ds.name, var.name),
                "OrderNumber": str(order),
                "Mandatory": _yes(var.core == "Req"),
            }
            if var.name in ds.keys:
                attrs["KeySequence"] = str(ds.keys.index(var.name) + 1)
            if var.role and doc.standard == "SDTMIG":
                attrs["Role"] = var.role
            if var.method:
                methods[_oid("MT", ds.name, var.name)] = var.method
                attrs["MethodOID"] = _oid("MT", ds.name, var.name)
            _e(ig, "ItemRef", attrs)
        _d(ig, "Class", {"Name": ds.klass or "SPECIAL PURPOSE"})
        leaf = _d(
            ig, "leaf", {"ID": _oid("LF", ds.name), f"{{{XLINK_NS}}}href": f"{ds.name.lower()}.xpt"}
        )
        _d(leaf, "title").text = f"{ds.name.lower()}.xpt"
    for ds in doc.datasets:
        spec = vlm[ds.name]
        for var in ds.variables:
            _item_def(mdv, ds, var, comments, ds.name, var.name, codelists=doc.codelists)
        if spec is not None:
            result, _key, codes = spec
            base = next(v for v in ds.variables if v.name == result)
            for code in codes:
                _item_def(
                    mdv,
                    ds,
                    base,
                    comments,
                    ds.name,
                    f"{result}.{code}",
                    code=code,
                    key=_key,
                    codelists=doc.codelists,
                )
    for oid, (name, nci, items) in doc.codelists.items():
        cl = _e(mdv, "CodeList", {"OID": _oid("CL", oid), "Name": name, "DataType": "text"})
        if nci:
            cl.set(f"{{{DEF_NS}}}StandardOID", "STD.CT")
        for value, code, decode in items:
            item = _e(cl, "CodeListItem", {"CodedValue": value})
            _text(item, "Decode", decode)
            if code:
                _e(item, "Alias", {"Name": code, "Context": "nci:ExtCodeID"})
        if nci:
            _e(cl, "Alias", {"Name": nci, "Context": "nci:ExtCodeID"})
    for oid, text in methods.items():
        m = _e(
            mdv,
            "MethodDef",
            {"OID": oid, "Name": f"Derivation of {oid[3:]}", "Type": "Computation"},
        )
        _text(m, "Description", text)
    for oid, text in comments.items():
        c = _d(mdv, "CommentDef", {"OID": oid})
        _text(c, "Description", text)
    if doc.acrf:
        leaf = _d(mdv, "leaf", {"ID": "LF.acrf", f"{{{XLINK_NS}}}href": "acrf.html"})
        _d(leaf, "title").text = "Annotated CRF"
    tree = ET.ElementTree(root)
    ET.indent(tree)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _item_def(
    mdv: ET.Element,
    ds: Dataset,
    var: Variable,
    comments: dict[str, str],
    *oid: str,
    code: str = "",
    key: str = "",
    codelists: Mapping[str, CodeListSpec],
) -> None:
    rows = [r for r in ds.rows if not code or str(r.get(key)) == code]
    sub = Dataset(ds.name, ds.label, ds.variables, rows)
    kind = _num_type(sub, var) if var.type == "Num" else "text"
    attrs = {"OID": _oid("IT", *oid), "Name": var.name, "DataType": kind, "SASFieldName": var.name}
    if kind == "text":
        attrs["Length"] = str(_length(sub, var))
    elif kind == "integer":
        attrs["Length"] = str(
            max(
                [1]
                + [
                    len(str(int(float(str(r[var.name])))))
                    for r in rows
                    if r.get(var.name) is not None
                ]
            )
        )
    else:
        attrs["Length"] = "8"
        attrs["SignificantDigits"] = "2"
    if var.comment and not code:
        cid = _oid("COM", ds.name, var.name)
        comments[cid] = var.comment
        attrs[f"{{{DEF_NS}}}CommentOID"] = cid
    item = _e(mdv, "ItemDef", attrs)
    _text(item, "Description", var.label if not code else f"{var.label} for {code}")
    if var.codelist and not code and var.codelist in codelists:
        _e(item, "CodeListRef", {"CodeListOID": _oid("CL", var.codelist)})
    origin = var.origin or "Collected"
    if origin == "Collected":
        o = _d(item, "Origin", {"Type": "Collected", "Source": "Investigator"})
        if ds.standard != "ADaMIG":
            _d(o, "DocumentRef", {"leafID": "LF.acrf"})
    elif origin == "Derived" and ds.standard == "ADaMIG" and var.method == "":
        _d(item, "Origin", {"Type": "Predecessor"})
    else:
        _d(item, "Origin", {"Type": origin})
    if not code and _value_level(ds) is not None and var.name == _value_level(ds)[0]:  # type: ignore[index]
        _d(item, "ValueListRef", {"ValueListOID": _oid("VL", ds.name, var.name)})


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


# --------------------------------------------------------------------------- validation


def define_schema_path() -> Path:
    import odmlib

    return Path(odmlib.__file__).parent / "schemas" / "define" / "2.1" / "define2-1-0.xsd"


@lru_cache(maxsize=1)
def _schema() -> object:
    import xmlschema

    return xmlschema.XMLSchema(str(define_schema_path()))


def define_problems(document: bytes) -> list[str]:
    """Every violation of the Define-XML 2.1 XSD; empty when the document validates."""
    import xmlschema

    schema = _schema()
    assert isinstance(schema, xmlschema.XMLSchema)
    try:
        return [str(err.reason or err.message) for err in schema.iter_errors(document.decode())]
    except xmlschema.XMLSchemaException as exc:
        return [str(exc)]
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]


# --------------------------------------------------------------------------- HTML


def define_html(doc: DefineDocument) -> str:
    """A readable rendering of the define without any stylesheet: one table per dataset."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>Define-XML {esc(doc.study)} '
        f"{esc(doc.standard)}</title></head><body>",
        f"<h1>{esc(doc.study)}: {esc(doc.standard)} {esc(doc.standard_version)} define</h1>",
        f"<p>{esc(doc.description)}</p><p>Protocol: {esc(doc.protocol_name)}. Created "
        f"{esc(doc.created)}. Controlled terminology: CDISC/NCI {CT_VERSION}.</p>",
        '<h2>Datasets</h2><table border="1"><tr><th>Dataset</th><th>Description</th>'
        "<th>Class</th><th>Structure</th><th>Keys</th><th>Location</th></tr>",
    ]
    for ds in doc.datasets:
        parts.append(
            f'<tr><td><a href="#{esc(ds.name)}">{esc(ds.name)}</a></td><td>{esc(ds.label)}</td>'
            f"<td>{esc(ds.klass)}</td><td>{esc(ds.structure)}</td>"
            f"<td>{esc(', '.join(ds.keys))}</td><td>{esc(ds.name.lower())}.xpt</td></tr>"
        )
    parts.append("</table>")
    for ds in doc.datasets:
        parts.append(f'<h2 id="{esc(ds.name)}">{esc(ds.name)} ({esc(ds.label)})</h2>')
        if ds.comment:
            parts.append(f"<p>{esc(ds.comment)}</p>")
        parts.append(
            '<table border="1"><tr><th>Variable</th><th>Label</th><th>Type</th>'
            "<th>Length</th><th>Role</th><th>Core</th><th>Codelist</th><th>Origin</th>"
            "<th>Method / comment</th></tr>"
        )
        for var in ds.variables:
            note = "; ".join(x for x in (var.method, var.comment) if x)
            parts.append(
                f"<tr><td>{esc(var.name)}</td><td>{esc(var.label)}</td><td>{var.type}</td>"
                f"<td>{_length(ds, var)}</td><td>{esc(var.role)}</td><td>{esc(var.core)}</td>"
                f"<td>{esc(var.codelist)}</td><td>{esc(var.origin)}</td><td>{esc(note)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Codelists</h2>")
    for oid, (name, nci, items) in doc.codelists.items():
        parts.append(f"<h3>{esc(oid)}: {esc(name)} {esc(nci)}</h3><ul>")
        parts += [f"<li>{esc(v)} ({esc(c) or 'sponsor'}): {esc(d)}</li>" for v, c, d in items]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


ANNOTATIONS: dict[str, dict[str, str]] = {
    "demographics": {
        "assessment_date": "DM.DMDTC",
        "age_years": "DM.AGE",
        "sex": "DM.SEX",
        "height_cm": "VS.VSORRES where VSTESTCD=HEIGHT",
        "weight_kg": "VS.VSORRES where VSTESTCD=WEIGHT",
    },
    "medical_history": {"*": "MH.MHTERM / MH.MHOCCUR", "assessment_date": "MH.MHDTC"},
    "kccq": {"assessment_date": "QS.QSDTC", "overall_score": "QS.QSORRES where QSTESTCD=KCCQOSS"},
    "tte": {"exam_date": "CV.CVDTC", "*": "CV.CVORRES (CVTESTCD per field)"},
    "angiogram": {"procedure_date": "PR.PRSTDTC where PRTRT=CORONARY ANGIOGRAM"},
    "venogram": {"procedure_date": "PR.PRSTDTC where PRTRT=CORONARY SINUS VENOGRAM"},
    "implant_procedure": {
        "procedure_date": "PR.PRSTDTC; DM.RFXSTDTC",
        "start_time": "PR.PRSTDTC",
        "end_time": "PR.PRENDTC",
        "device_udi": "DI.SPDEVID; DX.SPDEVID",
        "implant_released": "DX.DXOCCUR; DM.ACTARMCD",
        "*": "SUPPPR.QVAL",
    },
    "sham_procedure": {
        "procedure_date": "PR.PRSTDTC; DM.RFXSTDTC",
        "start_time": "PR.PRSTDTC",
        "end_time": "PR.PRENDTC",
    },
    "discharge": {"discharge_date": "SV.SVENDTC (VISIT=INDEX PROCEDURE)"},
    "follow_up": {
        "visit_date": "SV.SVSTDTC",
        "kccq_overall_score": "QS.QSORRES where QSTESTCD=KCCQOSS",
        "hf_hospitalizations": "HO (one record each, no date)",
        "*": "CV.CVORRES (CVTESTCD per field)",
    },
    "adverse_event": {
        "onset_date": "AE.AESTDTC",
        "term": "AE.AETERM",
        "serious": "AE.AESER",
        "severity": "AE.AESEV",
        "procedure_related": "AE.AEREL",
        "mae_category": "AE.AECAT / AE.AESCAT",
        "resolved_date": "AE.AEENDTC",
        "outcome": "AE.AEOUT",
        "hospitalized": "AE.AESHOSP; HO",
        "hospitalization_reason": "HO.HOCAT",
        "admission_date": "HO.HOSTDTC",
        "hospital_discharge_date": "HO.HOENDTC",
    },
    "death": {"death_date": "DM.DTHDTC; DS.DSSTDTC (DSDECOD=DEATH)"},
    "withdrawal": {"withdrawal_date": "DS.DSSTDTC", "reason": "DS.DSDECOD"},
}
"""Where each CRF field lands in SDTM (the annotated CRF)."""


def annotated_crf(protocol: Protocol, datasets: Sequence[Dataset]) -> str:
    """Each form of the protocol with its fields and the SDTM variables they feed; forms of
    arms not exported (blinded) are left out."""
    esc = html.escape
    hidden = set()
    if not any(ds.name == "TA" for ds in datasets):
        hidden = {a.procedure_form for a in protocol.arms if a.procedure_form}
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Annotated CRF'
        f"</title></head><body><h1>Annotated CRF: {esc(protocol.name)} "
        f"{esc(protocol.version)}</h1>",
    ]
    for form in protocol.forms:
        if form.code in hidden:
            continue
        notes = ANNOTATIONS.get(form.code, {})
        parts.append(
            f'<h2 id="{esc(form.code)}">{esc(form.name)}</h2><table border="1">'
            "<tr><th>Field</th><th>Question</th><th>SDTM</th></tr>"
        )
        for f in form.fields:
            target = notes.get(f.code) or notes.get("*") or "NOT SUBMITTED"
            parts.append(
                f"<tr><td>{esc(f.code)}</td><td>{esc(f.label)}</td><td>{esc(target)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
