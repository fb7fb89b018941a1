"""Promotions: earning rules, campaigns, promo codes, profile-action rewards, experiments."""
