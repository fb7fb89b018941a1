"""Wallet (Ozon.Счёт): stored-value accounts, card top-ups, money holds, ledger, interest."""
