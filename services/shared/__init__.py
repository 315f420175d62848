"""Records shared by the services that move money against holds and transactions (authorization,
settlement, refund): mesh holds, transactions, write-ahead intents and checkouts, all in Redis with
one Lua script per state transition."""
