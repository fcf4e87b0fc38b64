#!/usr/bin/env bash
echo "  guides: TODO"
