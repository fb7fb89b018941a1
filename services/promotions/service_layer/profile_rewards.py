"""Rewarding profile actions: recorded once, credited to Points through the outbox."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from services.promotions.adapters import points_peer
from services.promotions.adapters.tables import ProfileReward
from services.promotions.domain.profile_actions import (
    ProfileAction,
    ProfileRewards,
    once_key,
)
from shared.clock import Clock
from shared.db import UnitOfWork
from shared.ids import new_id
from shared.outbox import Outbox
from shared.validation import validate_customer_id


@dataclass(frozen=True)
class RewardOutcome:
    points_awarded: int
    already_rewarded: bool


class ProfileRewardsService:
    def __init__(self, rewards: ProfileRewards, outbox: Outbox, clock: Clock) -> None:
        self._rewards = rewards
        self._outbox = outbox
        self._clock = clock

    def record(self, uow: UnitOfWork, customer_id: str, action: ProfileAction, survey_id: str) -> RewardOutcome:
        validate_customer_id(customer_id)
        key = once_key(action, survey_id)
        already = select(ProfileReward).where(
            ProfileReward.customer_id == customer_id,
            ProfileReward.action == action.value,
            ProfileReward.survey_id == key,
        )
        if uow.session.exec(already).first() is not None:
            return RewardOutcome(points_awarded=0, already_rewarded=True)
        reward = ProfileReward(
            reward_id=new_id(),
            customer_id=customer_id,
            action=action.value,
            survey_id=key,
            points=self._rewards.points_for(action),
            created_at=self._clock.now(),
        )
        try:
            with uow.session.begin_nested():  # a concurrent twin may have won the unique key
                uow.session.add(reward)
        except IntegrityError:
            return RewardOutcome(points_awarded=0, already_rewarded=True)
        if reward.points > 0:
            self._outbox.enqueue(
                uow,
                peer=points_peer.PEER,
                method=points_peer.CREDIT_POINTS,
                request=points_peer.credit_request(
                    request_id=f"profile-reward:{reward.reward_id}",
                    customer_id=customer_id,
                    points=reward.points,
                    survey=action is ProfileAction.SURVEY_COMPLETED,
                    reference=f"survey:{key}" if key else f"profile:{action.value}",
                ),
            )
        return RewardOutcome(points_awarded=reward.points, already_rewarded=False)
