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
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
CMD ["ledger", "serve"]
