"""Read-only listing of a tracking server's catalog through MLflow's REST search API, without
importing MLflow or torch.

Through the MLflow client, ``gnomon catalog ls`` against a server with 200 directions took
4-7 s, and all but ~0.2 s of it was importing mlflow and torch (issue 23). The listing needs
two searches: ``model-versions/search`` with the filter pushed down (gnomon's kind tag, the
concept's registered name, simple tag equalities), paged by the server's token, and
``registered-models/search`` for the aliases. Both are the same endpoints the MLflow client
calls; auth follows MLflow's variables (``MLFLOW_TRACKING_TOKEN`` as a bearer token, else
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` as basic auth;
``MLFLOW_TRACKING_INSECURE_TLS=true`` skips certificate checks). Writes always go through
MLflow (:class:`catalog.Catalog`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from catalog.backend import short_error
from catalog.listing import ListingReader
from catalog.query import KIND_TAG, DirectionRecord, record_from_version
from catalog.refs import concept_of, registered_name
from pipeline.types import GnomonError

__all__ = ["RestReader"]

PAGE = 1000
"""Versions per search request: 200 directions are one request."""
TIMEOUT_S = 10.0


def _quoted(value: str) -> str | None:
    """``value`` as an MLflow filter literal, or None when it cannot be one safely (the
    filter grammar has no escape for a quote: such a filter stays client-side)."""
    return None if "'" in value or "\\" in value else f"'{value}'"


class RestReader(ListingReader):
    """The catalog's listing queries against ``http(s)://`` tracking server ``tracking_uri``."""

    def __init__(self, tracking_uri: str, timeout_s: float = TIMEOUT_S) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout_s = timeout_s
        self.requests = 0
        """HTTP requests made (the tests check that a listing is a few, not one per version)."""

    def _get(self, endpoint: str, params: Mapping[str, Any]) -> dict[str, Any]:
        url = f"{self.tracking_uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, headers=self._auth())
        ctx = ssl._create_unverified_context() if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true" \
            else None
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=ctx) as r:
                return json.loads(r.read() or b"{}")  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:200]
            raise GnomonError(f"the tracking server at {self.tracking_uri} refused {endpoint} "
                              f"(HTTP {e.code}): {detail}") from None
        except (OSError, ValueError) as e:
            raise GnomonError(f"cannot reach the tracking server at {self.tracking_uri}: {short_error(e)}; "
                              "start it (`gnomon services up`, or `mlflow server`) or fix --tracking-uri / "
                              "$MLFLOW_TRACKING_URI") from None

    @staticmethod
    def _auth() -> dict[str, str]:
        if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            return {"Authorization": f"Bearer {token}"}
        user, pw = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and pw:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}
        return {}

    def _paged(self, endpoint: str, key: str, filter_string: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"filter": filter_string, "max_results": PAGE}
        while True:
            page = self._get(endpoint, params)
            out.extend(page.get(key, []))
            if not page.get("next_page_token"):
                return out
            params["page_token"] = page["next_page_token"]

    def _aliases(self, concept: str | None) -> dict[str, dict[str, int]]:
        """``{registered name: {alias: version}}``: one request for one concept or all."""
        if concept is not None:
            name = registered_name(concept)
            try:
                found = [self._get("registered-models/get", {"name": name}).get("registered_model", {})]
            except GnomonError as e:
                if "RESOURCE_DOES_NOT_EXIST" in str(e):
                    return {}
                raise
        else:
            found = self._paged("registered-models/search", "registered_models", f"tags.{KIND_TAG} = 'concept'")
        return {m["name"]: {a["alias"]: int(a["version"]) for a in m.get("aliases", [])} for m in found if m}

    def records(self, concept: str | None = None, tags: Mapping[str, str] | None = None
                ) -> list[DirectionRecord]:
        """gnomon's versions (of ``concept`` if given), with ``tags`` equalities pushed down to
        the server's search; ordered by concept and version."""
        clauses = [f"tags.{KIND_TAG} = 'direction'"]
        if concept is not None:
            clauses.append(f"name = {_quoted(registered_name(concept))}")
        clauses += [f"tags.{k} = {q}" for k, v in (tags or {}).items() if (q := _quoted(v)) is not None]
        versions = self._paged("model-versions/search", "model_versions", " AND ".join(clauses))
        aliases = self._aliases(concept) if versions else {}
        recs = [record_from_version(SimpleNamespace(
            name=v["name"], version=v["version"], tags={t["key"]: t["value"] for t in v.get("tags", [])},
            run_id=v.get("run_id", ""), source=v.get("source", ""),
            creation_timestamp=int(v.get("creation_timestamp", 0))), aliases.get(v["name"], {}))
            for v in versions if v.get("current_stage") != "Deleted_Internal"]
        return sorted(recs, key=lambda r: (r.concept, r.version))

    def concepts(self) -> list[str]:
        found = self._paged("registered-models/search", "registered_models", f"tags.{KIND_TAG} = 'concept'")
        return sorted(concept_of(m["name"]) for m in found)
