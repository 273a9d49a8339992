"""The Azure runbooks' engine: no Prefect, just what each step does against Azure and the
machines, with Azure SDK errors translated at the edge (:mod:`.errors`).

========================  ===============================================================
:mod:`.records`           the durable record of a run: the rollback plan captured before
                          anything changed, the steps done, every change made
:mod:`.dns`               A records with ETags: the cutover changes only what the plan saw
:mod:`.network`           NSG rules: the breach's DenyAll isolation, displaced rules
:mod:`.flexible`          flexible servers: backups, geo-restore, point-in-time restore
:mod:`.deployments`       ARM templates: what-if, then the deployment
:mod:`.keyvault`          new secret versions, reading one back
:mod:`.lro`               waiting for long-running operations with progress
:mod:`.commands`          a configured command (deploy.sh, docker-compose) with a timeout
:mod:`.evidence`          tar + sha256 manifest, custody record, verification on download
:mod:`.passwords`         new passwords from ``secrets``
:mod:`.rotation`          ALTER ROLE with a SCRAM verifier, MongoDB updateUser; login checks
:mod:`.gitlog`            configuration changes since the last known-good commit
========================  ===============================================================

SDK clients come from the ``AzureSite`` block's factories (``blocks.azure``); these modules
take them as arguments.
"""
