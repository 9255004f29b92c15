"""``careflow serve``: the small web service that hears back from providers and customers.

service/app.py routes each provider's callbacks through webhooks/ into
careflow/responses.py; service/bodies.py reads request bodies (bounded JSON,
urlencoded and multipart forms); service/writer.py batches the writes;
service/pages.py is the unsubscribe page. docs/responses.md says what to configure where.
"""
