// Package smartauth is bulkfhir's authorization server for SMART Backend
// Services (SMART App Launch 2.x, checklist rows A-01..A-14), one
// implementation for the embedded server and the AWS functions:
//
//   - a registry of clients (ClientStore): a client id, its public keys as
//     a JWKS value or a JWKS URL, and the scopes it may be granted;
//   - the token endpoint (Server): client_credentials with a private_key_jwt
//     assertion signed RS384 or ES384, checked per RFC 7523 §3 and SMART's
//     asymmetric client authentication, replayed jti refused (ReplayCache),
//     errors in the RFC 6749 §5.2 format;
//   - the access tokens it issues: JWTs signed by bulkfhir's own key (Keys),
//     verified on every request without a store round trip (Authenticator);
//   - v1 and v2 system scopes (ParseScopes, Grant) and the discovery
//     document (.well-known/smart-configuration).
//
// The stores are ports: boltauth holds them in a bolt file, dynamoauth in
// DynamoDB with TTL. This package imports no AWS package.
package smartauth
