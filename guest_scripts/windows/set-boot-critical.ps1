# guestprep-script: set-boot-critical
# guestprep-output: json
# Makes the VirtIO storage drivers boot-start (Start=0) so the first boot on a VirtIO
# controller finds its disk; each old value is journaled, each new value read back.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$steps = @()
foreach ($svc in @($p.services)) {
    $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\' + $svc
    if (-not (Test-Path -Path $key)) { throw ('service ' + $svc + ' is not installed: install virtio-win first') }
    $steps += Set-RegistryValueJournaled -Operation 'windows.boot_critical' -Path $key -Name 'Start' -Value 0
}
Write-Result -Value ([ordered]@{ ok = $true; steps = $steps })
