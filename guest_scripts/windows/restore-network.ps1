# guestprep-script: restore-network
# guestprep-output: text
# First-boot task (SYSTEM): re-applies the captured static configuration to the
# adapter that now carries the same MAC (the VirtIO NIC), then removes its task.
# On the old hardware the MAC still belongs to the captured adapter: nothing to do.
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$dir = Join-Path -Path $env:ProgramData -ChildPath 'guestprep'
$capture = ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText((Join-Path -Path $dir -ChildPath 'network-capture.json')))
$log = Join-Path -Path $dir -ChildPath 'restore-network.log'
$pending = 0
foreach ($a in @($capture.adapters)) {
    $nic = @(Get-CimInstance -ClassName Win32_NetworkAdapter -Filter ("MACAddress = '" + [string]$a.mac + "'") | Where-Object -FilterScript { $_.NetConnectionID })
    if ($nic.Count -eq 0) { $pending++; continue }
    if ([string]$nic[0].GUID -eq [string]$a.guid) { $pending++; continue }
    $cfg = Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter ('Index = ' + [int]$nic[0].Index)
    $v4 = @(); $masks = @()
    for ($i = 0; $i -lt @($a.ip).Count; $i++) { if (-not (([string]@($a.ip)[$i]).Contains(':'))) { $v4 += [string]@($a.ip)[$i]; $masks += [string]@($a.subnet)[$i] } }
    $r = Invoke-CimMethod -InputObject $cfg -MethodName EnableStatic -Arguments @{ IPAddress = [string[]]$v4; SubnetMask = [string[]]$masks }
    if ($r.ReturnValue -gt 1) { throw ('EnableStatic returned ' + $r.ReturnValue) }
    if (@($a.gateways).Count -gt 0) { $null = Invoke-CimMethod -InputObject $cfg -MethodName SetGateways -Arguments @{ DefaultIPGateway = [string[]]@($a.gateways) } }
    if (@($a.dns).Count -gt 0) { $null = Invoke-CimMethod -InputObject $cfg -MethodName SetDNSServerSearchOrder -Arguments @{ DNSServerSearchOrder = [string[]]@($a.dns) } }
    Add-Content -Path $log -Value ((Get-Date).ToString('o') + ' applied ' + [string]$a.mac + ' to ' + [string]$nic[0].NetConnectionID)
}
# Persistent IPv4 routes are stored without an interface and survive the NIC change;
# the capture keeps them for the record only.
if ($pending -eq 0) {
    $null = & schtasks.exe '/Delete' '/TN' 'guestprep-restore-network' '/F'
    Add-Content -Path $log -Value ((Get-Date).ToString('o') + ' done, task removed')
}
