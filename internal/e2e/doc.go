// Package e2e holds end-to-end tests that run attache as Kubernetes runs
// it: a pod made by `attache inject`, attache's image from tools/image, a
// real kube-apiserver (testenv/kubeenv) and a real kubelet on containerd
// (testenv/kubeletenv). See docs/kubernetes.md, "End-to-end test".
package e2e
