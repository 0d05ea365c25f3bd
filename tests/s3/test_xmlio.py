"""XML parsing is hostile-input safe; builders produce what botocore parses."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from s3sidecar import errors, xmlio

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Delete><Object><Key>&lol4;</Key></Object></Delete>"""

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&xxe;</Key></Object></Delete>"""

XXE_PARAM = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/evil.dtd"> %remote;]>
<Delete><Object><Key>k</Key></Object></Delete>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        XXE_FILE,
        XXE_PARAM,
        # Same attacks hidden from a naive byte scan by a UTF-16 encoding.
        BILLION_LAUGHS.replace(b'version="1.0"', b'version="1.0" encoding="UTF-16"').decode().encode("utf-16"),
        XXE_FILE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16"),
        b"<Delete><Object><Key>&undefined;</Key></Object></Delete>",
        b'<?xml version="1.0"?><!DOCTYPE Delete><Delete><Object><Key>k</Key></Object></Delete>',
    ],
)
def test_dtd_and_entities_rejected(body):
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete_objects(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<Delete>",
        b"<Delete><Object><Key>k</Key></Object></Delete><Extra/>",
        b"not xml",
        b'<Delete xmlns="urn:evil"><Object><Key>k</Key></Object></Delete>',
        b'<x:Delete xmlns:x="urn:evil"><x:Object><x:Key>k</x:Key></x:Object></x:Delete>',
        b"<p:Delete><p:Object/></p:Delete>",  # unbound prefix
        b"<a>" * 100 + b"</a>" * 100,
        b"<Wrong><Object><Key>k</Key></Object></Wrong>",
    ],
)
def test_malformed_documents(body):
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete_objects(body)


def test_size_limit():
    body = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 10 + b" " * 2_000_000 + b"</Delete>"
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_xml(body)
    assert xmlio.parse_xml(body, max_bytes=3_000_000).tag == "Delete"


def test_parse_xml_strips_namespace_and_prefixes():
    root = xmlio.parse_xml(b'<s3:Tagging xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:TagSet/></s3:Tagging>')
    assert root.tag == "Tagging" and [c.tag for c in root] == ["TagSet"]


@pytest.mark.parametrize("ns", ["", NS])
def test_complete_multipart(ns):
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
    <CompleteMultipartUpload {ns}>
      <Part><ETag>"etag1"</ETag><PartNumber>1</PartNumber></Part>
      <Part><PartNumber> 2 </PartNumber><ETag>
        "etag2"</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>
      <Part><PartNumber>10000</PartNumber><ETag>e3</ETag></Part>
    </CompleteMultipartUpload>""".encode()
    assert xmlio.parse_complete_multipart(body) == [(1, '"etag1"'), (2, '"etag2"'), (10000, "e3")]


@pytest.mark.parametrize(
    "parts, error",
    [
        ("", errors.MalformedXML),
        ("<Part><PartNumber>0</PartNumber><ETag>e</ETag></Part>", errors.MalformedXML),
        ("<Part><PartNumber>10001</PartNumber><ETag>e</ETag></Part>", errors.MalformedXML),
        ("<Part><PartNumber>+1</PartNumber><ETag>e</ETag></Part>", errors.MalformedXML),
        ("<Part><PartNumber>1</PartNumber></Part>", errors.MalformedXML),
        ("<Part><ETag>e</ETag></Part>", errors.MalformedXML),
        (
            "<Part><PartNumber>2</PartNumber><ETag>e</ETag></Part><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part>",
            errors.InvalidPartOrder,
        ),
        (
            "<Part><PartNumber>1</PartNumber><ETag>e</ETag></Part><Part><PartNumber>1</PartNumber><ETag>e</ETag></Part>",
            errors.InvalidPartOrder,
        ),
    ],
)
def test_complete_multipart_invalid(parts, error):
    with pytest.raises(error):
        xmlio.parse_complete_multipart(f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode())


@pytest.mark.parametrize("ns", ["", NS])
def test_delete_objects(ns):
    body = f"""<Delete {ns}><Quiet>true</Quiet>
      <Object><Key> spaced key </Key></Object>
      <Object><Key>a&amp;b&lt;c</Key><VersionId>v1</VersionId></Object>
    </Delete>""".encode()
    objects, quiet = xmlio.parse_delete_objects(body)
    assert quiet is True
    assert objects == [(" spaced key ", None, None), ("a&b<c", "v1", None)]
    objects, _ = xmlio.parse_delete_objects(b'<Delete><Object><Key>k</Key><ETag>"e1"</ETag></Object></Delete>')
    assert objects == [("k", None, '"e1"')]
    _, quiet = xmlio.parse_delete_objects(b"<Delete><Object><Key>k</Key></Object></Delete>")
    assert quiet is False


def test_delete_objects_limit():
    def body(n):
        return ("<Delete>" + "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(n)) + "</Delete>").encode()

    assert len(xmlio.parse_delete_objects(body(1000))[0]) == 1000
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete_objects(body(1001))
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete_objects(b"<Delete><Object><Key></Key></Object></Delete>")


def _tagging(tags):
    inner = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in tags)
    return f"<Tagging {NS}><TagSet>{inner}</TagSet></Tagging>".encode()


def test_tagging():
    assert xmlio.parse_tagging(_tagging([("Modality", "CT"), ("Patient ID", "a+b=c.d_e:f/g@h"), ("empty", "")])) == {
        "Modality": "CT",
        "Patient ID": "a+b=c.d_e:f/g@h",
        "empty": "",
    }
    assert xmlio.parse_tagging(b"<Tagging><TagSet/></Tagging>") == {}


@pytest.mark.parametrize(
    "tags",
    [
        [(f"k{i}", "v") for i in range(11)],
        [("k", "v"), ("k", "w")],
        [("k" * 129, "v")],
        [("k", "v" * 257)],
        [("aws:reserved", "v")],
        [("bad*char", "v")],
        [("", "v")],
    ],
)
def test_tagging_invalid(tags):
    with pytest.raises(errors.InvalidTag):
        xmlio.parse_tagging(_tagging(tags))


def test_versioning():
    assert (
        xmlio.parse_versioning(f"<VersioningConfiguration {NS}><Status>Enabled</Status></VersioningConfiguration>".encode())
        == "Enabled"
    )
    assert xmlio.parse_versioning(b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>") == "Suspended"
    assert xmlio.parse_versioning(b"<VersioningConfiguration/>") is None
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_versioning(b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>")


def test_object_lock_config():
    body = f"""<ObjectLockConfiguration {NS}><ObjectLockEnabled>Enabled</ObjectLockEnabled>
      <Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>3650</Days></DefaultRetention></Rule>
    </ObjectLockConfiguration>""".encode()
    assert xmlio.parse_object_lock_config(body) == {"enabled": True, "mode": "COMPLIANCE", "days": 3650, "years": None}
    body = b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Years>10</Years></DefaultRetention></Rule></ObjectLockConfiguration>"
    assert xmlio.parse_object_lock_config(body)["years"] == 10
    plain = b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>"
    assert xmlio.parse_object_lock_config(plain) == {"enabled": True, "mode": None, "days": None, "years": None}


@pytest.mark.parametrize(
    "retention",
    [
        "<Mode>COMPLIANCE</Mode><Days>1</Days><Years>1</Years>",
        "<Mode>COMPLIANCE</Mode>",
        "<Days>1</Days>",
        "<Mode>STRICT</Mode><Days>1</Days>",
        "<Mode>COMPLIANCE</Mode><Days>ten</Days>",
    ],
)
def test_object_lock_config_invalid(retention):
    body = f"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>{retention}</DefaultRetention></Rule></ObjectLockConfiguration>"
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_object_lock_config(body.encode())


@pytest.mark.parametrize("period", ["<Days>0</Days>", "<Days>-5</Days>", "<Years>0</Years>", "<Years>101</Years>"])
def test_object_lock_config_bad_period(period):
    body = f"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode>{period}</DefaultRetention></Rule></ObjectLockConfiguration>"
    with pytest.raises(errors.InvalidRetentionPeriod):
        xmlio.parse_object_lock_config(body.encode())


def test_retention_and_legal_hold():
    body = f"<Retention {NS}><Mode>GOVERNANCE</Mode><RetainUntilDate>2030-01-02T03:04:05.5+01:00</RetainUntilDate></Retention>"
    parsed = xmlio.parse_retention(body.encode())
    assert parsed["mode"] == "GOVERNANCE"
    assert parsed["until_iso"] == "2030-01-02T02:04:05.500Z"
    assert xmlio.parse_retention(b"<Retention/>") == {"mode": None, "until_iso": None, "until": None}
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_retention(b"<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>2030-01-02</RetainUntilDate></Retention>")
    assert xmlio.parse_legal_hold(f"<LegalHold {NS}><Status>ON</Status></LegalHold>".encode()) is True
    assert xmlio.parse_legal_hold(b"<LegalHold><Status>OFF</Status></LegalHold>") is False
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_legal_hold(b"<LegalHold><Status>on</Status></LegalHold>")


def test_create_bucket():
    assert xmlio.parse_create_bucket(b"") is None
    assert (
        xmlio.parse_create_bucket(
            f"<CreateBucketConfiguration {NS}><LocationConstraint>eu-west-3</LocationConstraint></CreateBucketConfiguration>".encode()
        )
        == "eu-west-3"
    )
    assert xmlio.parse_create_bucket(b"<CreateBucketConfiguration/>") is None


def test_build_and_parse_with_botocore():
    from botocore.loaders import Loader
    from botocore.model import ServiceModel
    from botocore.parsers import RestXMLParser

    body = xmlio.build(
        "ListBucketResult",
        {
            "Name": "bucket",
            "Prefix": "",
            "KeyCount": 2,
            "MaxKeys": 1000,
            "IsTruncated": False,
            "Contents": [
                {"Key": "a&b<c>.dcm", "LastModified": xmlio.iso8601(1795908418.25), "ETag": '"e1"', "Size": 10},
                [("Key", "ü"), ("LastModified", xmlio.iso8601(0)), ("Size", 0)],
            ],
            "CommonPrefixes": [{"Prefix": "dir/"}],
            "ContinuationToken": None,
        },
    )
    assert body.startswith(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    )
    model = ServiceModel(Loader().load_service_model("s3", "service-2"), "s3")
    shape = model.operation_model("ListObjectsV2").output_shape
    parsed = RestXMLParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)
    assert parsed["IsTruncated"] is False and parsed["KeyCount"] == 2
    assert [c["Key"] for c in parsed["Contents"]] == ["a&b<c>.dcm", "ü"]
    assert parsed["Contents"][0]["LastModified"].isoformat() == "2026-11-28T23:26:58.250000+00:00"
    assert parsed["CommonPrefixes"] == [{"Prefix": "dir/"}]
    assert "ContinuationToken" not in parsed


def test_build_interleaved_and_refuses_invalid_text():
    body = xmlio.build(
        "ListVersionsResult", [("Version", {"Key": "a"}), ("DeleteMarker", {"Key": "b"}), ("Version", {"Key": "c"})]
    )
    root = ET.fromstring(body)
    assert [child.tag.split("}")[1] for child in root] == ["Version", "DeleteMarker", "Version"]
    assert xmlio.build("Error", {"Code": "x"}, namespace=False).endswith(b"<Error><Code>x</Code></Error>")
    with pytest.raises(ValueError):
        xmlio.build("X", {"Key": "bad\x01key"})


def test_timestamps():
    assert xmlio.iso8601(1795908418) == "2026-11-28T23:26:58.000Z"
    assert xmlio.iso8601(1795908418.9996) == "2026-11-28T23:26:59.000Z"
    assert xmlio.http_date(1795908418.7) == "Sat, 28 Nov 2026 23:26:58 GMT"
    assert xmlio.parse_iso8601("2026-11-28T23:26:58.000Z") == 1795908418
