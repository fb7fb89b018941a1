"""Profile-action rewards: each action pays once per customer, each survey once per survey."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.errors import InvalidArgument

MAX_SURVEY_ID = 64


class ProfileAction(StrEnum):
    CONTACTS_UPDATED = "CONTACTS_UPDATED"
    PHOTO_ADDED = "PHOTO_ADDED"
    SURVEY_COMPLETED = "SURVEY_COMPLETED"


@dataclass(frozen=True)
class ProfileRewards:
    """Points per action, from configuration."""

    contacts_updated: int
    photo_added: int
    survey_completed: int

    def points_for(self, action: ProfileAction) -> int:
        return {
            ProfileAction.CONTACTS_UPDATED: self.contacts_updated,
            ProfileAction.PHOTO_ADDED: self.photo_added,
            ProfileAction.SURVEY_COMPLETED: self.survey_completed,
        }[action]


def once_key(action: ProfileAction, survey_id: str) -> str:
    """What makes a reward unique for a customer: the action, and for surveys the survey.

    Refuses a survey without its id and a survey id on any other action, so a client mistake
    cannot turn into a second reward.
    """
    survey_id = survey_id.strip()
    if action is ProfileAction.SURVEY_COMPLETED:
        if not survey_id:
            raise InvalidArgument.field("survey_id", "is required for SURVEY_COMPLETED", "SURVEY_ID_REQUIRED")
        if len(survey_id) > MAX_SURVEY_ID:
            raise InvalidArgument.field("survey_id", f"must be at most {MAX_SURVEY_ID} characters", "INVALID_SURVEY_ID")
        return survey_id
    if survey_id:
        raise InvalidArgument.field("survey_id", f"must be empty for {action.value}", "SURVEY_ID_NOT_ALLOWED")
    return ""
