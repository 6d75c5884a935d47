"""Neutron-style API errors.

Every error a client can see is one of these; the API layer renders it as
``{"NeutronError": {"type": <class name>, "message": ..., "detail": ""}}`` with
``status``. Services raise them; nothing else reaches the client.
"""

from __future__ import annotations


class NeutronError(Exception):
    status = 500
    message = "An unknown exception occurred."

    def __init__(self, message: str | None = None, *, type_name: str | None = None, detail: str = ""):
        self.msg = message or self.message
        self.type_name = type_name or type(self).__name__
        self.detail = detail
        super().__init__(self.msg)

    def body(self) -> dict:
        return {"NeutronError": {"type": self.type_name, "message": self.msg, "detail": self.detail}}


class BadRequest(NeutronError):
    status = 400
    message = "Bad request."


class InvalidInput(BadRequest):
    pass


class MalformedRequestBody(BadRequest):
    pass


class NotAuthenticated(NeutronError):
    status = 401
    message = "Authentication required."


class NotAuthorized(NeutronError):
    status = 403
    message = "Not authorized."


class PolicyNotAuthorized(NotAuthorized):
    pass


class NotFound(NeutronError):
    status = 404
    message = "Resource could not be found."


class HTTPNotFound(NotFound):
    pass


class NetworkNotFound(NotFound):
    pass


class SubnetNotFound(NotFound):
    pass


class PortNotFound(NotFound):
    pass


class AgentNotFound(NotFound):
    pass


class MethodNotAllowed(NeutronError):
    status = 405
    message = "Method not allowed."


class Conflict(NeutronError):
    status = 409
    message = "Conflict."


class InUse(Conflict):
    pass


class NetworkInUse(InUse):
    pass


class SubnetInUse(InUse):
    pass


class IpAddressAlreadyAllocated(Conflict):
    pass


class MacAddressInUse(Conflict):
    pass


class IpAddressGenerationFailure(Conflict):
    pass


class NoNetworkAvailable(Conflict):
    pass


class SegmentationIdInUse(Conflict):
    pass


class OverQuota(Conflict):
    pass


class ServiceUnavailable(NeutronError):
    status = 503
    message = "Service unavailable, try again."


class RequestEntityTooLarge(NeutronError):
    status = 413
    message = "Request body too large."


class InternalServerError(NeutronError):
    status = 500
    message = "Request failed: internal server error while processing your request."


# Added by the data layer (Neutron's names, so clients see the types they know).
class IpAddressInUse(Conflict):
    pass


class GatewayConflictWithAllocationPools(Conflict):
    pass


class FlatNetworkInUse(Conflict):
    pass


class VlanIdInUse(Conflict):
    pass


class TunnelIdInUse(Conflict):
    pass


class PortInUse(InUse):
    pass


class InvalidSharedSetting(Conflict):
    pass
