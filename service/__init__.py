"""``careflow serve``: the small web service that hears back from providers and customers.

service/app.py serves every provider in the webhook registry
(webhooks/registry.py) into careflow/responses.py, knowing none of them by
name; webhooks/bodies.py reads request bodies (bounded JSON, urlencoded and
multipart forms); service/writer.py batches the writes; service/pages.py is
the unsubscribe page. docs/responses.md says what to configure where.
"""
