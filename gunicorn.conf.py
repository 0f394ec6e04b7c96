# How gunicorn serves the marketplace (`make demo` and production: gunicorn reads this file from
# the working directory). Requests it refuses itself are answered as problem+json
# (market/web/serving.py); its limits are kept as they are safe: a request line of at most 8 KiB,
# at most 100 headers of at most 8 KiB each.
worker_class = "market.web.serving.ProblemWorker"
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# The access log carries each request's id, the one in its X-Request-Id header and problem body.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
