"""Starting executions: the request's checks, idempotency, the resource's lock, and the first run."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from cost_engine.errors import (
    Conflict,
    DeniedByBusinessRules,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    RecommendationStale,
    UnsupportedType,
    validation_problems,
)
from cost_engine.executors import executor_class
from cost_engine.models import (
    ExecutionRecord,
    ExecutionRequest,
    ExecutionStatus,
    Recommendation,
    new_execution_id,
    utc_now,
)
from cost_engine.prechecks import request_refusals, staleness
from cost_engine.service.runs import Runs, execution_arn, iso_seconds

S = ExecutionStatus
MAX_SCHEDULE_AHEAD = timedelta(days=30)


def execution_id_for_key(idempotency_key: str) -> str:
    """The execution id a request with this idempotency key gets, the same on every repeat."""
    return "exec-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


class StartExecutions(Runs):
    def register_recommendation(self, recommendation: Recommendation) -> tuple[Recommendation, bool]:
        executor = executor_class(recommendation.type)  # refuses types the engine cannot carry out yet
        try:
            executor.parameters_model.model_validate(recommendation.parameters)
        except ValidationError as error:
            problems = validation_problems(error.errors(), prefix="parameters.")
            raise InvalidParameters(f"the parameters do not fit {recommendation.type.value}: {problems}") from None
        return self.ctx.recommendations.register(recommendation)

    def get_recommendation(self, recommendation_id: str) -> Recommendation:
        return self.ctx.recommendations.get(recommendation_id)

    def execute_once(
        self, request: ExecutionRequest, actor: str, idempotency_key: str | None = None
    ) -> tuple[ExecutionRecord, bool]:
        """Start an execution; returns (record, created). With an idempotency key the execution id
        derives from the key, so a repeat of the same request (a retried call, an event delivered
        twice) finds the first execution and starts nothing new; the same key with a different
        request is refused."""
        recommendation = self.ctx.recommendations.get(request.recommendation_id)
        executor_class(recommendation.type)  # refuses types the engine cannot carry out
        state_machine_arn = self.ctx.settings.state_machine_arns.get(recommendation.type.value)
        if not state_machine_arn:
            raise UnsupportedType(f"no state machine is deployed for '{recommendation.type.value}'")
        fingerprint = request.model_dump_json()
        # Keys are the customer's own: two customers choosing the same key never meet.
        keyed_id = execution_id_for_key(f"{recommendation.customer_id}/{idempotency_key}") if idempotency_key else None
        if idempotency_key and keyed_id:
            existing = self._existing_for_key(keyed_id, idempotency_key, fingerprint)
            if existing is not None:
                return self._resume(existing, state_machine_arn), False
        # Refused on the recommendation alone, before anything is written: the validate step checks
        # these again (with the resource's tags) when the execution runs, which may be later.
        settings = self.ctx.settings
        if stale := staleness(recommendation, timedelta(days=settings.max_recommendation_age_days), utc_now()):
            raise RecommendationStale(stale)
        if refusals := request_refusals(
            settings.business_rules.for_customer(recommendation.customer_id), recommendation
        ):
            raise DeniedByBusinessRules("; ".join(refusals))
        if request.scheduled_time is not None:
            now = utc_now()
            if request.scheduled_time <= now:
                raise InvalidRequest("scheduled_time is in the past: give a future time, or leave it out to run now")
            if request.scheduled_time > now + MAX_SCHEDULE_AHEAD:
                raise InvalidRequest(
                    f"scheduled_time is more than {MAX_SCHEDULE_AHEAD.days} days ahead: give a time before "
                    f"{iso_seconds(now + MAX_SCHEDULE_AHEAD)}"
                )

        record = ExecutionRecord(
            execution_id=keyed_id or new_execution_id(),
            recommendation_id=recommendation.recommendation_id,
            customer_id=recommendation.customer_id,
            recommendation_type=recommendation.type,
            resource_id=recommendation.resource_id,
            region=recommendation.region,
            account_id=recommendation.account_id,
            status=S.SCHEDULED if request.scheduled_time else S.PENDING,
            requested_by=actor,
            dry_run=request.dry_run,
            auto_approve_requested=request.auto_approve,
            approval_timeout_seconds=request.approval_timeout_seconds or self.ctx.settings.approval_timeout_seconds,
            estimated_monthly_savings=recommendation.estimated_monthly_savings,
            scheduled_time=request.scheduled_time,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint if idempotency_key else None,
        )
        # Its run is named after it, so the run's ARN is known now: written with the record, not after.
        record.state_machine_execution_arn = execution_arn(state_machine_arn, record.execution_id)
        if not record.dry_run:
            # One execution per resource (a dry run changes nothing and takes no lock). Held at most
            # as long as this execution can run: its wait, its approval and its acting phase.
            settings = self.ctx.settings
            wait = (request.scheduled_time - utc_now()) if request.scheduled_time else timedelta(0)
            lease = wait + timedelta(seconds=record.approval_timeout_seconds + 2 * settings.max_acting_seconds)
            self.ctx.limits.lock_resource(recommendation, record.execution_id, lease)
        try:
            self.ctx.executions.create(record)
        except Conflict:
            if not record.dry_run:
                self.ctx.limits.release_resource(record, cooldown=False)
            if idempotency_key is None or keyed_id is None:
                raise
            # The same key at the same moment: the other request created it.
            existing = self._existing_for_key(keyed_id, idempotency_key, fingerprint)
            if existing is None:
                raise
            return self._resume(existing, state_machine_arn), False
        self.ctx.audit.append(
            record.execution_id,
            "execution_requested",
            actor,
            {**request.model_dump(mode="json"), **({"idempotency_key": idempotency_key} if idempotency_key else {})},
        )
        if record.status == S.SCHEDULED:
            self.ctx.audit.append(
                record.execution_id, "scheduled", actor, {"scheduled_time": iso_seconds(record.scheduled_time)}
            )
        return self._resume(record, state_machine_arn), True

    def _existing_for_key(self, execution_id: str, idempotency_key: str, fingerprint: str) -> ExecutionRecord | None:
        try:
            existing = self.ctx.executions.get(execution_id)
        except NotFound:
            return None
        if existing.request_fingerprint != fingerprint:
            raise Conflict(
                f"idempotency key '{idempotency_key}' was already used for a different request "
                f"(execution {existing.execution_id}): send the same request again, or use a new key"
            )
        return existing

    def _resume(self, record: ExecutionRecord, state_machine_arn: str) -> ExecutionRecord:
        """Start the record's state machine unless it has moved on. Its run is named after the
        execution and its input depends only on the record, so starting it twice is harmless."""
        if record.status not in (S.PENDING, S.SCHEDULED):
            return record
        state_input: dict[str, Any] = {
            "execution_id": record.execution_id,
            "mode": "execute",
            "dry_run": record.dry_run,
            "approval_timeout_seconds": record.approval_timeout_seconds,
            "error": None,
            # Always present (null when unset) so the state machine's Choice never meets a missing path.
            "scheduled_time": iso_seconds(record.scheduled_time),
        }
        self._start(state_machine_arn, record.execution_id, state_input, record, record.status)
        return record
