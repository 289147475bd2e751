"""X-Road's own XML schemas (identifiers, message headers, represented party), bundled so served WSDLs are offline."""

from __future__ import annotations

from lxml import etree

IDENTIFIERS_NS = "http://x-road.eu/xsd/identifiers"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
REPRESENTATION_NS = "http://x-road.eu/xsd/representation.xsd"
XS_NS = "http://www.w3.org/2001/XMLSchema"

# PR-MESS Annex A, with the annotations left out (they only add bytes to every WSDL a gateway serves).
IDENTIFIERS_XSD = f"""<xs:schema xmlns:xs="{XS_NS}" elementFormDefault="qualified"
        targetNamespace="{IDENTIFIERS_NS}" xmlns="{IDENTIFIERS_NS}">
    <xs:complexType name="XRoadIdentifierType">
        <xs:sequence>
            <xs:element minOccurs="0" ref="xRoadInstance"/>
            <xs:element minOccurs="0" ref="memberClass"/>
            <xs:element minOccurs="0" ref="memberCode"/>
            <xs:element minOccurs="0" ref="subsystemCode"/>
            <xs:element minOccurs="0" ref="groupCode"/>
            <xs:element minOccurs="0" ref="serviceCode"/>
            <xs:element minOccurs="0" ref="serviceVersion"/>
            <xs:element minOccurs="0" ref="securityCategoryCode"/>
            <xs:element minOccurs="0" ref="serverCode"/>
        </xs:sequence>
        <xs:attribute ref="objectType" use="required"/>
    </xs:complexType>
    <xs:simpleType name="XRoadObjectType">
        <xs:restriction base="xs:string">
            <xs:enumeration value="MEMBER"/>
            <xs:enumeration value="SUBSYSTEM"/>
            <xs:enumeration value="SERVER"/>
            <xs:enumeration value="GLOBALGROUP"/>
            <xs:enumeration value="LOCALGROUP"/>
            <xs:enumeration value="SECURITYCATEGORY"/>
            <xs:enumeration value="SERVICE"/>
            <xs:enumeration value="CENTRALSERVICE"/>
        </xs:restriction>
    </xs:simpleType>
    <xs:element name="xRoadInstance" type="xs:string"/>
    <xs:element name="memberClass" type="xs:string"/>
    <xs:element name="memberCode" type="xs:string"/>
    <xs:element name="subsystemCode" type="xs:string"/>
    <xs:element name="groupCode" type="xs:string"/>
    <xs:element name="serviceCode" type="xs:string"/>
    <xs:element name="serviceVersion" type="xs:string"/>
    <xs:element name="securityCategoryCode" type="xs:string"/>
    <xs:element name="serverCode" type="xs:string"/>
    <xs:attribute name="objectType" type="XRoadObjectType"/>
    <xs:complexType name="XRoadClientIdentifierType">
        <xs:complexContent>
            <xs:restriction base="XRoadIdentifierType">
                <xs:sequence>
                    <xs:element ref="xRoadInstance"/>
                    <xs:element ref="memberClass"/>
                    <xs:element ref="memberCode"/>
                    <xs:element minOccurs="0" ref="subsystemCode"/>
                </xs:sequence>
                <xs:attribute ref="objectType" use="required"/>
            </xs:restriction>
        </xs:complexContent>
    </xs:complexType>
    <xs:complexType name="XRoadServiceIdentifierType">
        <xs:complexContent>
            <xs:restriction base="XRoadIdentifierType">
                <xs:sequence>
                    <xs:element ref="xRoadInstance"/>
                    <xs:element ref="memberClass"/>
                    <xs:element ref="memberCode"/>
                    <xs:element minOccurs="0" ref="subsystemCode"/>
                    <xs:element ref="serviceCode"/>
                    <xs:element minOccurs="0" ref="serviceVersion"/>
                </xs:sequence>
                <xs:attribute ref="objectType" use="required" fixed="SERVICE"/>
            </xs:restriction>
        </xs:complexContent>
    </xs:complexType>
    <xs:complexType name="XRoadCentralServiceIdentifierType">
        <xs:complexContent>
            <xs:restriction base="XRoadIdentifierType">
                <xs:sequence>
                    <xs:element ref="xRoadInstance"/>
                    <xs:element ref="serviceCode"/>
                </xs:sequence>
                <xs:attribute ref="objectType" use="required" fixed="CENTRALSERVICE"/>
            </xs:restriction>
        </xs:complexContent>
    </xs:complexType>
    <xs:complexType name="XRoadSecurityServerIdentifierType">
        <xs:complexContent>
            <xs:restriction base="XRoadIdentifierType">
                <xs:sequence>
                    <xs:element ref="xRoadInstance"/>
                    <xs:element ref="memberClass"/>
                    <xs:element ref="memberCode"/>
                    <xs:element ref="serverCode"/>
                </xs:sequence>
                <xs:attribute ref="objectType" use="required" fixed="SERVER"/>
            </xs:restriction>
        </xs:complexContent>
    </xs:complexType>
    <xs:complexType name="XRoadGlobalGroupIdentifierType">
        <xs:complexContent>
            <xs:restriction base="XRoadIdentifierType">
                <xs:sequence>
                    <xs:element ref="xRoadInstance"/>
                    <xs:element ref="groupCode"/>
                </xs:sequence>
                <xs:attribute ref="objectType" use="required" fixed="GLOBALGROUP"/>
            </xs:restriction>
        </xs:complexContent>
    </xs:complexType>
</xs:schema>"""

# PR-MESS Annex B. X-Road's copy imports xml.xsd (from w3.org) only for xml:lang on title and notes; those are
# documentation elements, so they are plain strings here and the schema needs nothing from the network.
XROAD_XSD = f"""<xs:schema xmlns:xs="{XS_NS}" elementFormDefault="qualified"
        targetNamespace="{XROAD_NS}" xmlns="{XROAD_NS}" xmlns:id="{IDENTIFIERS_NS}">
    <xs:import namespace="{IDENTIFIERS_NS}"/>
    <xs:element name="client" type="id:XRoadClientIdentifierType"/>
    <xs:element name="service" type="id:XRoadServiceIdentifierType"/>
    <xs:element name="centralService" type="id:XRoadCentralServiceIdentifierType"/>
    <xs:element name="securityServer" type="id:XRoadSecurityServerIdentifierType"/>
    <xs:element name="id" type="xs:string"/>
    <xs:element name="userId" type="xs:string"/>
    <xs:element name="requestHash">
        <xs:complexType>
            <xs:simpleContent>
                <xs:extension base="xs:string">
                    <xs:attribute name="algorithmId" type="xs:string"/>
                </xs:extension>
            </xs:simpleContent>
        </xs:complexType>
    </xs:element>
    <xs:element name="issue" type="xs:string"/>
    <xs:element name="protocolVersion" type="xs:string"/>
    <xs:element name="version" type="xs:string"/>
    <xs:element name="title" type="xs:string"/>
    <xs:element name="notes" type="xs:string"/>
    <xs:element name="techNotes" type="xs:string"/>
</xs:schema>"""

# The third-party representation extension (PR-REPR).
REPRESENTATION_XSD = f"""<xs:schema xmlns:xs="{XS_NS}" elementFormDefault="qualified"
        targetNamespace="{REPRESENTATION_NS}" xmlns="{REPRESENTATION_NS}">
    <xs:element name="partyClass" type="xs:string"/>
    <xs:element name="partyCode" type="xs:string"/>
    <xs:complexType name="XRoadRepresentedPartyType">
        <xs:sequence>
            <xs:element minOccurs="0" ref="partyClass"/>
            <xs:element minOccurs="1" ref="partyCode"/>
        </xs:sequence>
    </xs:complexType>
    <xs:element name="representedParty" type="XRoadRepresentedPartyType"/>
</xs:schema>"""

BUNDLED: dict[str, str] = {IDENTIFIERS_NS: IDENTIFIERS_XSD, XROAD_NS: XROAD_XSD, REPRESENTATION_NS: REPRESENTATION_XSD}
# A schema that needs another one to be complete (the header schema refers to the identifier types).
DEPENDS: dict[str, tuple[str, ...]] = {XROAD_NS: (IDENTIFIERS_NS,)}


def bundled_schema(namespace: str) -> etree._Element:
    """A fresh copy of the bundled schema for ``namespace`` (callers insert it into documents they own)."""
    return etree.fromstring(BUNDLED[namespace])
