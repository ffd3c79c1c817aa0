# Placeholder until the deployment issue: the GPU image is built there (see issue "Deployment").
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENTRYPOINT ["python", "pipeline.py"]
