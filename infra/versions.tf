terraform {
  # 1.9+: variable validations that refer to other variables.
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Checked against the 6.50 schema (attribute names of every resource used here).
      version = "~> 6.50"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
  }

  # Remote state in a GCS bucket (partial configuration; see infra/README.md):
  #   terraform init -backend-config="bucket=<state bucket>" -backend-config="prefix=callpush/prod"
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge({ app = "makecall-push", managed-by = "terraform" }, var.labels)
}
