// Package e2e holds Terrace's end-to-end tests on the testbed: real terrace-node daemons with
// their BGP speakers, BIRD top-of-rack routers and pods, checked from the outside (kernel routes,
// the ToR's RIB, packets on the wire, terracectl). It has no library code and must never touch
// anything outside the namespaces its testbeds create.
package e2e
