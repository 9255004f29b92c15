"""``careflow serve``: the small web service that hears back from providers and customers.

careflow/service/app.py serves every provider in the webhook registry
(careflow/webhooks/registry.py) into careflow/responses.py, knowing none of them by
name; careflow/webhooks/bodies.py reads request bodies (bounded JSON, urlencoded and
multipart forms); careflow/service/writer.py batches the writes; careflow/service/pages.py is
the unsubscribe page. docs/responses.md says what to configure where.
"""
