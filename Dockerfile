FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ledger ./ledger
COPY api ./api
COPY projections ./projections
COPY audit ./audit
COPY stripe_standin ./stripe_standin
COPY relay ./relay
COPY cluster ./cluster
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --home /app ledger
USER ledger
# Production unless told otherwise: no Stripe stand-in, no demo account, /metrics on a port
# of its own. The service refuses to start until STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and
# LEDGER_PAGE_KEY are given, and DATABASE_URL should name ledger_service (`ledger db setup`).
ENV LEDGER_ENV=production HOST=0.0.0.0 PORT=8000 METRICS_PORT=9100
EXPOSE 8000 9100
CMD ["ledger", "serve"]
