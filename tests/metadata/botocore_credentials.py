"""Fetches instance-metadata credentials with botocore, as an SDK in a pod does.

The metadata endpoint is botocore's default (http://169.254.169.254/); botocore asks for an
IMDSv2 token first, then lists the role and fetches its credentials with the token. Prints
the credentials botocore returned as one JSON object; exits 1 when it got none.
"""
import json
import sys

from botocore.utils import InstanceMetadataFetcher

fetcher = InstanceMetadataFetcher(timeout=5, num_attempts=2)
assert fetcher.get_base_url() == "http://169.254.169.254/", fetcher.get_base_url()
credentials = fetcher.retrieve_iam_role_credentials()
print(json.dumps(credentials))
sys.exit(0 if credentials else 1)
