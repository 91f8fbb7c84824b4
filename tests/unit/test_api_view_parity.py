"""One source for every shape (issue 13): every API response model that mirrors a service
view dataclass is listed here with its view, and the two must agree field for field, with
the same types (a nested model standing for its nested view). A field added to a view and
not to its model (or the other way round), or a type changed on one side only, fails here.
A new API model that looks like a view (most of its fields are a view's) must be listed too,
or declared not to mirror one."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import types
import typing
from functools import cache
from typing import Any

import pydantic

import trialdesk.api
import trialdesk.services

PARITY: dict[str, str] = {
    "AcceptedPublic": "Accepted",
    "AmendmentPreviewPublic": "AmendmentPreview",
    "AmendmentPublic": "AmendmentView",
    "ApprovalPublic": "ApprovalView",
    "ArmPublic": "ArmView",
    "AuditEntryPublic": "AuditEntryView",
    "AuditPagePublic": "Page",
    "CasePublic": "CaseView",
    "CountRowPublic": "EnrolmentRow",
    "DevicePublic": "DeviceView",
    "EfficacyPublic": "EfficacySummary",
    "EnrolmentReportPublic": "Enrolment",
    "HistoryEntryPublic": "HistoryEntry",
    "InErrorPublic": "InErrorView",
    "InterimPublic": "InterimStatus",
    "InventoryPublic": "InventoryView",
    "InvitationLinkPublic": "InvitationLink",
    "InvitationPublic": "InvitationView",
    "ListInfoPublic": "ListInfo",
    "LotPublic": "LotView",
    "NotificationPublic": "NotificationView",
    "Page": "Page",
    "ProtocolDetailPublic": "ProtocolSummary",
    "ProtocolVersionPublic": "VersionView",
    "QueryPublic": "QueryView",
    "RandomizationPublic": "RandomizationResult",
    "RecallEntryPublic": "RecallEntry",
    "RecallPublic": "RecallView",
    "RoleHeldPublic": "RoleHeld",
    "SafetyPublic": "SafetySummary",
    "ScreeningLogRowPublic": "ScreeningLogRow",
    "ShipmentPublic": "ShipmentView",
    "schemas.SignaturePublic": "Signature",
    "SitePublic": "SiteInfo",
    "SiteStockPublic": "SiteStockView",
    "StockWarningPublic": "StockWarning",
    "StratumStatusPublic": "StratumStatus",
    "SubjectPublic": "SubjectView",
    "TherapyInfoPublic": "TherapyInfo",
    "TotpEnrolmentPublic": "TotpEnrolment",
    "TotpStatusPublic": "TotpStatus",
    "TrialUnblindingPublic": "TrialUnblindingView",
    "UsedDevicePublic": "UsedDeviceView",
    "UserPublic": "UserInfo",
    "VisitItemPublic": "VisitItem",
    "VisitPublic": "VisitView",
    # issue 15 (x15a locks, SDV, sign-off; x15b data quality, consent)
    "schemas_locks.LockPublic": "LockView",
    "schemas_locks.BlockerPublic": "BlockerView",
    "schemas_locks.ChecklistPublic": "ChecklistView",
    "schemas_locks.SdvRecordPublic": "SdvView",
    "schemas_locks.SdvSummaryPublic": "SdvSummary",
    "schemas_locks.RecordSignaturePublic": "SignatureView",
    "schemas_records.DiscrepancyPublic": "DiscrepancyView",
    "schemas_records.QualityRunPublic": "QualityRun",
    "schemas_records.ExclusionPublic": "ExclusionView",
    "schemas_records.MissingRowPublic": "MissingRow",
    "schemas_records.ConsentPublic": "ConsentView",
    "schemas_records.ConsentDuePublic": "ConsentDueView",
    "schemas_records.SubjectConsentsPublic": "SubjectConsents",
}
"""API model -> the service view it mirrors (by class name, wherever the service lives)."""

NOT_MIRRORS: dict[str, str] = {
    "ArmDefinitionPublic": "the protocol's arm definition (with its ratio), not a subject's arm",
    "GrantIn": "a request body; its fields happen to be a held role's",
    "schemas_records.ReconsentIn": "a request body; its fields happen to be a consent's",
}
"""Models whose fields look like a view's without mirroring it, and why."""

FIELD_DIFFERENCES: dict[str, tuple[set[str], set[str]]] = {
    # model-only fields, view-only fields
    "AuditPagePublic": ({"blinded"}, set()),  # says whether the caller read the projection
    "EnrolmentReportPublic": ({"as_of", "by_month", "forecast"}, set()),  # the report adds them
    "RandomizationPublic": (set(), {"arm_label", "stratum"}),  # the arm is an ArmPublic
}
"""Where the API shape must differ from the view's, field by field, and why."""

TYPE_DIFFERENCES: dict[tuple[str, str], str] = {
    ("AuditPagePublic", "items"): "a page of AuditEntryPublic (the view's page is generic)",
    ("Page", "items"): "generic in both: Page[T] of the model for the view's T",
    ("EfficacyPublic", "outcomes"): "each SubjectOutcome as a JSON object",
    ("EfficacyPublic", "changed_after_unblinding"): "the view's tuple as a JSON array",
    ("SafetyPublic", "changed_after_unblinding"): "the view's tuple as a JSON array",
    ("ProtocolDetailPublic", "arms"): "the view's arm dicts typed as ArmDefinitionPublic",
    ("RandomizationPublic", "arm"): "the view's arm code and label as one ArmPublic",
}
"""Fields whose types differ on purpose, and how."""


def _classes(package: types.ModuleType, kind: typing.Callable[[type], bool]) -> dict[str, type]:
    """Classes of the package by ``module.Name`` (the module's name inside the package, e.g.
    ``schemas_locks.SignaturePublic``) and, where only one class has it, by plain ``Name``
    (a name two modules use is then named with its module in the tables above)."""
    qualified: dict[str, type] = {}
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == module.__name__ and kind(value):
                tail = module.__name__.removeprefix(f"{package.__name__}.")
                qualified[f"{tail}.{value.__qualname__}"] = value
    plain: dict[str, list[type]] = {}
    for value in qualified.values():
        plain.setdefault(value.__qualname__, []).append(value)
    unique = {name: found[0] for name, found in plain.items() if len(found) == 1}
    return {**qualified, **unique}


@cache
def models() -> dict[str, type[pydantic.BaseModel]]:
    def is_model(c: type) -> bool:  # generic instances (Page[X]) are their generic
        return issubclass(c, pydantic.BaseModel) and "[" not in c.__qualname__

    return typing.cast(dict[str, type[pydantic.BaseModel]], _classes(trialdesk.api, is_model))


@cache
def views() -> dict[str, type]:
    return _classes(trialdesk.services, dataclasses.is_dataclass)


def _model_fields(name: str) -> dict[str, Any]:
    return {k: f.annotation for k, f in models()[name].model_fields.items()}


def _view_fields(name: str) -> dict[str, Any]:
    view = views()[name]
    hints = typing.get_type_hints(view)
    return {f.name: hints[f.name] for f in dataclasses.fields(view)}


def _shape(annotation: Any) -> Any:
    """A comparable form of a type: unions as sets, Annotated and Literal unwrapped, str
    enums as str, a listed API model as the view it mirrors."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return ("union", frozenset(_shape(a) for a in typing.get_args(annotation)))
    if origin is typing.Annotated:
        return _shape(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return "str"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return (name, tuple(_shape(a) for a in typing.get_args(annotation)))
    if inspect.isclass(annotation):
        mirrored = {models()[m]: v for m, v in PARITY.items() if m in models()}
        if annotation in mirrored:
            return mirrored[annotation]
        return "str" if issubclass(annotation, str) else annotation.__qualname__
    return str(annotation)


def test_every_listed_pair_exists() -> None:
    assert not set(PARITY) - set(models()), (
        "listed models that no longer exist (or whose name two modules now use: name it "
        "with its module, e.g. schemas.SignaturePublic)"
    )
    assert not set(PARITY.values()) - set(views()), "listed views that no longer exist"


def test_models_and_views_have_the_same_fields() -> None:
    """A field added, removed or renamed on one side only fails (the declared differences
    excepted)."""
    drift = {}
    for model, view in PARITY.items():
        model_only, view_only = FIELD_DIFFERENCES.get(model, (set(), set()))
        have, want = set(_model_fields(model)), set(_view_fields(view))
        if (have - want, want - have) != (model_only, view_only):
            drift[f"{model} / {view}"] = {"model only": have - want, "view only": want - have}
    assert not drift, drift


def test_models_and_views_type_their_fields_alike() -> None:
    """Every shared field has the same type on both sides (nested models standing for the
    views they mirror), the declared differences excepted."""
    drift = {}
    for model, view in PARITY.items():
        mine, theirs = _model_fields(model), _view_fields(view)
        for name in set(mine) & set(theirs):
            if (model, name) in TYPE_DIFFERENCES:
                continue
            if _shape(mine[name]) != _shape(theirs[name]):
                drift[f"{model}.{name}"] = (mine[name], theirs[name])
    assert not drift, drift
    stale = {k for k in TYPE_DIFFERENCES if k[0] in PARITY and (
        _shape(_model_fields(k[0])[k[1]]) == _shape(_view_fields(PARITY[k[0]])[k[1]])
    )}  # fmt: skip
    assert not stale, f"types agree now: remove from TYPE_DIFFERENCES: {stale}"


def test_a_model_that_looks_like_a_view_is_listed() -> None:
    """A new response model copying most of a view's fields must be listed in PARITY (or
    declared in NOT_MIRRORS), so that it is kept in step from the start."""
    unlisted = {}
    listed = {id(models()[n]) for n in {*PARITY, *NOT_MIRRORS} if n in models()}
    for name, model in models().items():
        if "." not in name or id(model) in listed:
            continue  # each class once, by its qualified name
        fields = set(_model_fields(name))
        for view in (v for v in views() if "." in v):
            theirs = set(_view_fields(view))
            if fields and theirs and len(fields & theirs) / len(fields | theirs) >= 0.6:
                unlisted[name] = view
    assert not unlisted, f"list these in PARITY (model: view) or NOT_MIRRORS: {unlisted}"


def test_the_parity_check_catches_drift() -> None:
    """The comparison itself: a view with one more field, or one field typed otherwise,
    than its model is told apart."""

    @dataclasses.dataclass
    class Shown:
        a: int
        b: str | None

    class ShownPublic(pydantic.BaseModel):
        a: int
        b: typing.Annotated[str, "text"] | None

    class Drifted(pydantic.BaseModel):
        a: str
        b: str | None

    hints = typing.get_type_hints(Shown)
    same = {k: _shape(f.annotation) for k, f in ShownPublic.model_fields.items()}
    assert same == {k: _shape(v) for k, v in hints.items()}
    drifted = {k: _shape(f.annotation) for k, f in Drifted.model_fields.items()}
    assert drifted != {k: _shape(v) for k, v in hints.items()}
