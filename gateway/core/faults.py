"""The fault taxonomy in one place: X-Road-compatible codes, who raised them, and how each is rendered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from xml.sax.saxutils import escape


class Origin(StrEnum):
    """Where a fault arose, which becomes the code's prefix (PR-MESS fault codes)."""

    CLIENT = "Client"  # the caller's request was bad
    CLIENT_PROXY = "Server.ClientProxy"  # the consumer's gateway
    SERVER_PROXY = "Server.ServerProxy"  # the provider's gateway


class Code(StrEnum):
    # Message shape
    INVALID_CONTENT_TYPE = "InvalidContentType"
    INVALID_SOAP = "InvalidSoap"
    INVALID_REST = "InvalidRest"
    INVALID_REQUEST = "InvalidRequest"  # X-Road's code for a metaservice request missing what it needs
    INVALID_MESSAGE = "InvalidMessage"  # a peer-link frame that cannot be read
    MISSING_HEADER = "MissingHeader"
    DUPLICATE_HEADER_FIELD = "DuplicateHeaderField"
    MISSING_BODY = "MissingBody"
    INCONSISTENT_HEADERS = "InconsistentHeaders"
    INCONSISTENT_RESPONSE = "InconsistentResponse"
    INVALID_PROTOCOL_VERSION = "InvalidProtocolVersion"
    INVALID_CLIENT_IDENTIFIER = "InvalidClientIdentifier"
    INVALID_SERVICE_IDENTIFIER = "InvalidServiceIdentifier"
    MESSAGE_TOO_LARGE = "MessageTooLarge"
    # Access and services
    ACCESS_DENIED = "AccessDenied"
    SERVICE_DISABLED = "ServiceDisabled"
    SERVICE_FAILED = "ServiceFailed"
    SERVICE_TIMEOUT = "ServiceTimeout"
    UNKNOWN_SERVICE = "UnknownService"
    UNKNOWN_MEMBER = "UnknownMember"
    SERVICE_TYPE = "ServiceType"
    # Signatures and certificates
    SSL_AUTHENTICATION_FAILED = "SslAuthenticationFailed"
    CERT_VALIDATION = "CertValidation"
    CERT_REVOKED = "CertificateRevoked"  # an OCSP response says the signer's certificate is revoked
    INVALID_SIGNATURE_VALUE = "InvalidSignatureValue"
    MALFORMED_SIGNATURE = "MalformedSignature"
    # Global configuration
    MALFORMED_GLOBALCONF = "MalformedGlobalConf"
    OUTDATED_GLOBALCONF = "OutdatedGlobalConf"
    # Network and internals
    NETWORK_ERROR = "NetworkError"
    INTERNAL_ERROR = "InternalError"
    LOGGING_FAILED = "LoggingFailed"
    TIMESTAMPER_FAILED = "LoggingFailed.TimestamperFailed"  # X-Road's code once timestamping failed too long


# HTTP status a REST caller gets for each code; SOAP faults always travel as HTTP 500 (SOAP 1.1).
_REST_STATUS: dict[Code, int] = {
    Code.MESSAGE_TOO_LARGE: 413,
    Code.ACCESS_DENIED: 403,
    Code.SERVICE_DISABLED: 503,
    Code.UNKNOWN_SERVICE: 404,
    Code.UNKNOWN_MEMBER: 404,
    Code.SERVICE_FAILED: 502,
    Code.SERVICE_TIMEOUT: 504,
    Code.NETWORK_ERROR: 502,
    Code.OUTDATED_GLOBALCONF: 503,
    Code.MALFORMED_GLOBALCONF: 503,
    Code.INCONSISTENT_RESPONSE: 502,
    Code.LOGGING_FAILED: 503,
    Code.TIMESTAMPER_FAILED: 503,
}


@dataclass(eq=False)
class Fault(Exception):
    """A federation fault: the code, a human message free of secrets, and the id to find it in logs."""

    origin: Origin
    code: Code | str
    message: str
    detail: str = ""  # X-Road puts a correlation UUID here

    def __str__(self) -> str:
        return f"{self.full_code}: {self.message}"

    @property
    def full_code(self) -> str:
        return f"{self.origin}.{self.code}"

    @property
    def http_status(self) -> int:
        if self.origin is Origin.CLIENT:
            return 413 if self.code == Code.MESSAGE_TOO_LARGE else 400
        try:
            return _REST_STATUS.get(Code(self.code), 500)
        except ValueError:
            return 500

    def with_detail(self, detail: str) -> Fault:
        return Fault(self.origin, self.code, self.message, detail)

    def to_dict(self) -> dict[str, str]:
        return {"type": self.full_code, "message": self.message, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: object) -> Fault:
        """Rebuild a fault sent by a peer gateway; anything unexpected becomes an internal fault."""
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return Fault(Origin.SERVER_PROXY, Code.INTERNAL_ERROR, "peer gateway sent an unreadable fault")
        full = data["type"]
        for origin in (Origin.CLIENT_PROXY, Origin.SERVER_PROXY, Origin.CLIENT):
            if full.startswith(origin.value + "."):
                code = full[len(origin.value) + 1:]
                return Fault(origin, code, str(data.get("message", ""))[:1000], str(data.get("detail", ""))[:100])
        return Fault(Origin.SERVER_PROXY, Code.INTERNAL_ERROR, str(data.get("message", ""))[:1000])


def render_json(fault: Fault) -> bytes:
    """The REST r1 error body: ``{"type","message","detail"}``."""
    return json.dumps(fault.to_dict(), separators=(",", ":")).encode()


def render_xml_error(fault: Fault) -> bytes:
    """The REST r1 error body for callers that ask for XML."""
    return (
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        f"<error><type>{escape(fault.full_code)}</type><message>{escape(fault.message)}</message>"
        f"<detail>{escape(fault.detail)}</detail></error>"
    ).encode()


def render_soap_fault(fault: Fault) -> bytes:
    """A SOAP 1.1 fault in X-Road's shape, with the correlation id in ``faultDetail``."""
    return (
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        "<SOAP-ENV:Body><SOAP-ENV:Fault>"
        f"<faultcode>{escape(fault.full_code)}</faultcode>"
        f"<faultstring>{escape(fault.message)}</faultstring>"
        "<faultactor></faultactor>"
        f"<detail><faultDetail xmlns=\"\">{escape(fault.detail)}</faultDetail></detail>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()
