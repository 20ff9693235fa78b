//! Reading manifests from files and directories (recursive `*.yaml`, `*.yml`, `*.json`).
