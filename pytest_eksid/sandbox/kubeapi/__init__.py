"""A subset of the Kubernetes REST API over real HTTP and HTTPS, backed by an in-memory store.

Enough for the official ``kubernetes`` client, ``kubectl`` and pytest-testinfra's ``kubectl://``
backend:

- resources: core/v1 namespaces, nodes, serviceaccounts, pods (+ ``status``, ``log``, ``exec``),
  secrets, configmaps, events, resourcequotas, limitranges; apps/v1 daemonsets, deployments,
  replicasets (+ ``status``); admissionregistration.k8s.io/v1 mutatingwebhookconfigurations;
- verbs: create, get, list, watch, update (PUT), patch (JSON merge, strategic merge, JSON
  patch), delete, deletecollection; ``dryRun=All``; label and field selectors;
- discovery: aggregated (``apidiscovery.k8s.io/v2``) and legacy (``/api``, ``/apis``, group
  versions); server-side printing (``meta.k8s.io/v1`` ``Table``) for ``kubectl get``;
- ``Status`` error bodies as kube-apiserver writes them (400/401/403/404/405/409/410/415/422);
- ``pods/exec`` over WebSocket (``v5.channel.k8s.io``, ``v4.channel.k8s.io``); the kubelet runs
  the command (``Store.exec_handler``).

One module per concern: ``resources`` (the resource table), ``errors`` (Status bodies),
``selectors``, ``patches``, ``validation`` (and defaults), ``store`` (objects and watch),
``tables`` (kubectl's Table output), ``discovery`` (and OpenAPI, content negotiation), ``tls``,
``protobuf`` (kubectl's imperative create bodies), ``request``, ``streaming`` (exec),
``serviceaccounts`` (in-cluster access: the ServiceAccount admission plugin's token volume,
TokenRequest, the root CA) and ``server`` (authentication, the authorization point, routing).
Published standards come from their libraries: JSON Patch from ``jsonpatch``, the CA from
``trustme``, WebSocket from ``wsproto``.

One port serves plain HTTP and TLS (sniffed from the first byte): kubectl sends a bearer token
only to an ``https://`` server, so the kubeconfig should name ``https_url`` with the CA in
``ca_data`` (``KubeApiServer.kubeconfig``). Admission (the EKS mutating webhooks, the
ServiceAccount admission check) and the kubelet hook in through callbacks, so this package knows
nothing of AWS. There are no controllers: DaemonSets, Deployments and ReplicaSets are stored,
validated and defaulted, and their status is whatever was written to ``/status``.
"""

from pytest_eksid.sandbox.kubeapi.errors import ApiError
from pytest_eksid.sandbox.kubeapi.server import KubeApiServer
from pytest_eksid.sandbox.kubeapi.store import Store, now_rfc3339

__all__ = ["ApiError", "KubeApiServer", "Store", "now_rfc3339"]
