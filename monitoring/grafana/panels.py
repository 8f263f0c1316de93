"""Grafana dashboard JSON (schemaVersion 39) from a few plain functions: panels, variables, layout.

Why a builder and not hand-edited JSON: every panel gets the same datasource variable, legend,
tooltip and unit handling, ids and grid positions are computed, and a reviewer reads a dozen
lines per dashboard instead of a thousand. The output is deterministic (sorted keys, no
timestamps), so the committed JSON can be checked against it.

Only the Python standard library is used, so ``python3 monitoring/grafana/build.py`` runs
anywhere. Panel types: timeseries, stat, state-timeline, bargauge, heatmap, row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

Json = dict[str, Any]


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel; ``legend`` is Grafana's legendFormat (``{{label}}``); ``unit``
    overrides the panel's unit for this query's series only."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"
    unit: str = ""


@dataclass
class Panel:
    """A panel before layout: its JSON without id and gridPos, and the size it asks for."""

    body: Json
    w: int
    h: int


def mapping(values: dict[int, tuple[str, str]]) -> list[Json]:
    """A value mapping: number -> (text, color)."""
    return [{
        "type": "value",
        "options": {str(v): {"text": text, "color": color, "index": i} for i, (v, (text, color)) in
                    enumerate(sorted(values.items()))},
    }]


def _targets(queries: tuple[Q, ...]) -> list[Json]:
    out = []
    for i, q in enumerate(queries):
        out.append({
            "refId": chr(ord("A") + i),
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "range": not q.instant,
            "instant": q.instant,
            "format": q.fmt,
        })
    return out


def _overrides(queries: tuple[Q, ...]) -> list[Json]:
    return [
        {"matcher": {"id": "byFrameRefID", "options": chr(ord("A") + i)},
         "properties": [{"id": "unit", "value": q.unit}]}
        for i, q in enumerate(queries) if q.unit
    ]


def _thresholds(steps: list[tuple[float | None, str]] | None) -> Json:
    steps = steps or [(None, "green")]
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def _panel(kind: str, title: str, queries: tuple[Q, ...], *, description: str, unit: str,
           custom: Json, options: Json, w: int, h: int, decimals: int | None = None,
           minimum: float | None = None, maximum: float | None = None,
           mappings: list[Json] | None = None, thresholds: list[tuple[float | None, str]] | None = None,
           color: str = "palette-classic") -> Panel:
    defaults: Json = {
        "unit": unit, "custom": custom, "color": {"mode": color},
        "mappings": mappings or [], "thresholds": _thresholds(thresholds),
    }
    for key, value in (("decimals", decimals), ("min", minimum), ("max", maximum)):
        if value is not None:
            defaults[key] = value
    body = {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "targets": _targets(queries), "options": options,
        "fieldConfig": {"defaults": defaults, "overrides": _overrides(queries)},
    }
    return Panel(body, w, h)


_LEGEND = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
_TOOLTIP = {"mode": "multi", "sort": "desc"}
_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def timeseries(title: str, *queries: Q, description: str = "", unit: str = "short", stack: bool = False,
               w: int = 12, h: int = 8, minimum: float | None = 0, maximum: float | None = None,
               decimals: int | None = None) -> Panel:
    custom = {
        "drawStyle": "line", "lineWidth": 1, "fillOpacity": 25 if stack else 10, "showPoints": "never",
        "spanNulls": False, "axisPlacement": "auto", "gradientMode": "none",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    options = {"legend": _LEGEND, "tooltip": _TOOLTIP}
    return _panel("timeseries", title, queries, description=description, unit=unit, custom=custom,
                  options=options, w=w, h=h, minimum=minimum, maximum=maximum, decimals=decimals)


def stat(title: str, *queries: Q, description: str = "", unit: str = "short", w: int = 4, h: int = 4,
         decimals: int | None = None, thresholds: list[tuple[float | None, str]] | None = None,
         text_mode: str = "auto", graph: bool = True) -> Panel:
    options = {
        "reduceOptions": _REDUCE_LAST, "colorMode": "value", "graphMode": "area" if graph else "none",
        "justifyMode": "auto", "orientation": "auto", "textMode": text_mode, "wideLayout": True,
        "showPercentChange": False,
    }
    return _panel("stat", title, queries, description=description, unit=unit, custom={}, options=options,
                  w=w, h=h, decimals=decimals, thresholds=thresholds, color="thresholds")


def state_timeline(title: str, *queries: Q, states: dict[int, tuple[str, str]], description: str = "",
                   w: int = 24, h: int = 6) -> Panel:
    custom = {"fillOpacity": 80, "lineWidth": 0, "hideFrom": {"legend": False, "tooltip": False, "viz": False}}
    options = {
        "mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _panel("state-timeline", title, queries, description=description, unit="short", custom=custom,
                  options=options, w=w, h=h, mappings=mapping(states), color="thresholds")


def bargauge(title: str, *queries: Q, description: str = "", unit: str = "short", w: int = 12, h: int = 8,
             decimals: int | None = None, thresholds: list[tuple[float | None, str]] | None = None) -> Panel:
    options = {
        "reduceOptions": _REDUCE_LAST, "displayMode": "gradient", "orientation": "horizontal",
        "showUnfilled": True, "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
        "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300,
    }
    return _panel("bargauge", title, queries, description=description, unit=unit, custom={}, options=options,
                  w=w, h=h, decimals=decimals, thresholds=thresholds, color="thresholds", minimum=0)


def heatmap(title: str, query: Q, *, description: str = "", unit: str = "s", w: int = 24, h: int = 8) -> Panel:
    """A heatmap of a histogram's buckets; ``query`` must be ``sum by (le) (increase(..._bucket[...]))``."""
    custom = {"hideFrom": {"legend": False, "tooltip": False, "viz": False}, "scaleDistribution": {"type": "linear"}}
    options = {
        "calculate": False, "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                                                    "scale": "exponential", "exponent": 0.5, "steps": 64,
                                                    "reverse": False},
        "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
        "rowsFrame": {"layout": "auto"}, "cellValues": {"unit": "short"},
        "filterValues": {"le": 1e-9}, "showValue": "never",
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
        "legend": {"show": True}, "exemplars": {"color": "rgba(255,0,255,0.7)"},
    }
    q = Q(query.expr, query.legend or "{{le}}", fmt="heatmap")
    return _panel("heatmap", title, (q,), description=description, unit=unit, custom=custom, options=options,
                  w=w, h=h)


def row(title: str) -> Panel:
    return Panel({"type": "row", "title": title, "collapsed": False, "panels": []}, GRID_WIDTH, 1)


def datasource_variable() -> Json:
    return {
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
        "regex": "", "skipUrlSync": False,
    }


def query_variable(name: str, label: str, metric: str, label_name: str) -> Json:
    """A multi-value variable over ``label_values(metric, label_name)``; "All" means ``.*``."""
    definition = f"label_values({metric}, {label_name})"
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE, "definition": definition,
        "query": {"qryType": 1, "query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [],
        "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1,
    }


def layout(panels: list[Panel]) -> list[Json]:
    """Ids and grid positions: left to right, wrapping at 24 columns; a row starts a new line."""
    out: list[Json] = []
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        if p.body["type"] == "row" or x + p.w > GRID_WIDTH:
            x, y, line_h = 0, y + line_h, 0
        out.append({"id": i, "gridPos": {"x": x, "y": y, "w": p.w, "h": p.h}, **p.body})
        x, line_h = x + p.w, max(line_h, p.h)
        if p.body["type"] == "row":
            x, y, line_h = 0, y + p.h, 0
    return out


def dashboard(uid: str, title: str, description: str, panels: list[Panel], *,
              variables: list[Json] | None = None, time_from: str = "now-1h") -> Json:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["ultravox"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "timezone": "browser", "refresh": "10s", "liveNow": False, "fiscalYearStartMonth": 0, "weekStart": "",
        "time": {"from": time_from, "to": "now"}, "timepicker": {},
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "links": [{
            "title": "Ultravox dashboards", "type": "dashboards", "tags": ["ultravox"], "asDropdown": True,
            "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
            "tooltip": "", "url": "",
        }],
        "templating": {"list": [datasource_variable(), *(variables or [])]},
        "panels": layout(panels),
    }
